"""bench/results/ holds measurements and their READMEs; the tools that made them live in bench/ as
maintained code (bench/ab.py, bench/micro/, ...), run in quick mode by bench/test_tools.py."""
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
CODE = {".py", ".sh", ".bash", ".ipynb"}


def test_no_code_lives_under_bench_results():
    assert RESULTS.is_dir()
    code = sorted(str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*") if p.is_file() and p.suffix in CODE)
    assert code == [], f"move these to bench/ as tools and cite the command in their README: {code}"
