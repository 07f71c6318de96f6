"""engine.layout: the one module that knows a run folder's names, its checkpoint folders, how
RUN[:best|latest] reads, and metrics.json's keys."""
import dataclasses
import json
import pathlib

import pytest

from engine import layout, report

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("source,want", [
    ("runs/a", ("runs/a", "best")), ("runs/a:best", ("runs/a", "best")), ("runs/a:latest", ("runs/a", "latest")),
    ("runs/a:b", ("runs/a:b", "best")),  # a colon in a folder name is part of the name
    ("C:latest", ("C", "latest")),
])
def test_a_source_names_a_run_and_one_of_its_checkpoints(source, want):
    assert layout.parse_source(source) == want


def test_checkpoint_folders_and_run_files(tmp_path):
    assert layout.checkpoint_dir("r", "best") == "r/checkpoints/best"
    assert layout.checkpoint_dir("r") == layout.checkpoint_dir("r", "latest") == "r/checkpoints"
    with pytest.raises(ValueError):
        layout.checkpoint_dir("r", "newest")
    with pytest.raises(AssertionError):
        layout.run_file("r", "model.onnx")  # an export, not a run file


def test_metrics_round_trip_and_older_runs_read_missing_keys_as_none():
    full = {f.name: i for i, f in enumerate(dataclasses.fields(layout.Metrics))}
    assert layout.Metrics.from_dict(full).to_dict() == full
    old = layout.Metrics.from_dict({"test_accuracy": 0.9, "a_key_no_longer_written": 1})
    assert old.test_accuracy == 0.9 and old.speed_choice is None


def test_every_report_column_is_a_metrics_field():
    fields = {f.name for f in dataclasses.fields(layout.Metrics)}
    assert {key.split(".")[0] for _, key, _ in report.COLUMNS} <= fields  # "flops.training_flops": flops


def test_read_metrics_reads_what_the_trainer_writes(tmp_path):
    (tmp_path / layout.CONFIG_FILE).write_text("{}")
    (tmp_path / layout.METRICS_FILE).write_text(json.dumps({"test_accuracy": 0.5, "policy": "float32"}))
    m = layout.read_metrics(str(tmp_path))
    assert (m.test_accuracy, m.policy, m.xla) == (0.5, "float32", None)


def _docstrings(tree) -> set:
    import ast
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def test_no_run_file_name_is_written_outside_the_layout_module():
    """A run folder's file and folder names live in engine/layout.py: code elsewhere names them through
    it (docstrings may describe them), so that a change of the format is one change."""
    import ast
    names = set(layout.RUN_FILES)
    with_extension = [n for n in names if "." in n]
    found = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        if path.name == "layout.py":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if node.value in names or any(n in node.value for n in with_extension):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:60]!r}")
    assert not found, found
