"""bench/results/ holds measurements and their READMEs; the tools that made them live in bench/ as
maintained code (bench/ab.py, bench/micro/, ...), run in quick mode by bench/test_tools.py."""
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
CODE = {".py", ".sh", ".bash", ".ipynb"}


def test_no_code_lives_under_bench_results():
    assert RESULTS.is_dir()
    code = sorted(str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*") if p.is_file() and p.suffix in CODE)
    assert code == [], f"move these to bench/ as tools and cite the command in their README: {code}"


def test_every_results_folder_says_which_engine_it_measured_and_how():
    """A dated result is data about one engine: its README names the engine commit and the command."""
    import re
    readmes = sorted(RESULTS.glob("*/README.md")) + sorted(RESULTS.glob("*/*/README.md"))
    assert readmes
    for readme in readmes:
        text = readme.read_text()
        assert re.search(r"## Engine commit\n\n(.*\n)*.*`[0-9a-f]{7,40}`", text), readme
        assert re.search(r"^    \S|`(engine|python|pytest|bash|ENGINE_|PYTHONPATH)", text, re.M), readme
