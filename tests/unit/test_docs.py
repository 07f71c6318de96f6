"""The README and the documentation: generated pages match the code, every relative link resolves,
and the README stays short and speaks to users."""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_pages_match_the_code():
    for rel, text in _generator().pages().items():
        assert (ROOT / rel).read_text() == text, f"{rel} is out of date: run python docs/gen_reference.py"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _without_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = _without_code(page.read_text())
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.relative_to(ROOT)}: link to {target} does not resolve"
        if anchor and dest.suffix == ".md":
            headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", _without_code(dest.read_text()), re.M)}
            assert anchor in headings, f"{page.relative_to(ROOT)}: no heading #{anchor} in {dest.name}"


def test_the_readme_is_short_and_speaks_to_users():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for word in (r"\bissues?\b", r"\bsessions?\b", r"\bthe bar\b", r"\bour machines\b", r"\bhere\b",
                 r"\b[0-9a-f]{7,40}\b(?<![0-9]{7})"):
        assert not re.search(word, text, re.I), f"README.md: {word}"


def test_the_site_builds_and_renders_code_as_code(tmp_path):
    """mkdocs build --strict (as CI runs it), then the built pages: Python-Markdown keeps a `\\|` inside
    a code span in a table literally (GitHub shows a pipe), and a code block inside a list item needs
    a fence to be code."""
    import os
    import subprocess
    import sys
    site = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert p.returncode == 0, p.stderr
    for page in site.rglob("*.html"):
        codes = re.findall(r"<code>(.*?)</code>", page.read_text(), re.S)
        assert not [c for c in codes if "\\|" in c], f"{page.relative_to(site)}: a literal \\| in code"
    deploy = (site / "deploy" / "index.html").read_text()
    assert re.search(r"<code>[^<]*engine export onnx my_vgg16\.keras", deploy)


def test_install_hints_are_quoted_for_every_shell():
    """zsh expands an unquoted `.[trt]` as a glob and fails: `pip install -e '.[trt]'`."""
    unquoted = [f"{path.relative_to(ROOT)}:{i}" for path in [*(ROOT / "engine").rglob("*.py"), *PAGES]
                for i, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"-e \.\[", line)]
    assert unquoted == []


def test_the_command_list_names_every_export_format():
    from engine.commands import usage
    line = next(x for x in usage().splitlines() if x.strip().startswith("export"))
    for fmt in ("SavedModel", "ONNX", "TensorRT", "OpenVINO"):
        assert fmt in line


def test_the_design_page_maps_every_module():
    """docs/design.md is the map of the package: a module it does not name is one a reader cannot find
    there (and a name it keeps after a module is gone is a wrong map)."""
    text = (ROOT / "docs" / "design.md").read_text()
    named = set(re.findall(r"`([a-z_0-9]+)`", text))
    package = ROOT / "engine"
    modules = {p.stem for p in package.rglob("*.py") if not p.stem.startswith("__")}
    folders = {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    missing = sorted(m for m in modules if m not in named and f"engine/{m}.py" not in text)
    assert not missing, f"docs/design.md does not name: {missing}"
    for folder in folders:
        assert f"engine/{folder}/" in text, folder


def test_the_version_is_one_and_the_changelog_has_its_heading():
    """engine.__version__ is pyproject's version. A release X.Y.Z has its `## X.Y.Z (date)` heading in
    CHANGELOG.md; a version in the making, X.Y.Z.devN, has `## Unreleased` on top and no `## X.Y.Z` yet.
    The released versions follow (under `## Unreleased`, if any), newest first, each with its date."""
    import tomllib

    import engine
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert engine.__version__ == version
    m = re.fullmatch(r"(\d+\.\d+\.\d+)(\.dev\d+)?", version)
    assert m, f"{version}: not X.Y.Z or X.Y.Z.devN"
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    unreleased = headings[:1] == ["Unreleased"]
    released = [re.fullmatch(r"(\d+)\.(\d+)\.(\d+) \(\d{4}-\d{2}-\d{2}\)", h) for h in headings[unreleased:]]
    assert released and all(released), headings
    numbers = [tuple(map(int, r.groups())) for r in released]
    assert numbers == sorted(numbers, reverse=True) and len(set(numbers)) == len(numbers), headings
    shown = [h.split()[0] for h in headings[unreleased:]]
    if m.group(2):
        assert unreleased, f"{version} is in the making: CHANGELOG.md needs ## Unreleased on top"
        assert m.group(1) not in shown, f"{version} is not released yet: no ## {m.group(1)} heading"
    else:
        assert m.group(1) in shown, f"CHANGELOG.md has no ## {m.group(1)} heading"

