"""Runs checkpointed by engine 0.1.0, before the package layout changed, resume and export with
today's code (tests/fixtures/runs-v0.1/README.md says how they were made)."""
import pathlib
import shutil

import numpy as np
import pytest

from engine.train import resolve

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "runs-v0.1"


@pytest.mark.parametrize("model", ["tiny", "airbench"])
def test_a_run_checkpointed_before_the_layout_change_resumes_to_the_same_weights(tmp_path, model):
    from engine.export.load import load_run
    from engine.train.trainer import Trainer
    run = tmp_path / model
    shutil.copytree(FIXTURES / model, run)
    cfg = resolve.resolve({("run", "resume"): True, ("run", "out"): str(run), ("run", "quiet"): True})
    assert cfg.model.model == model and cfg.optim.epochs == 2
    logs = []
    t = Trainer(cfg, log=logs.append)
    metrics = t.run()
    assert "resumed at step 22 (epoch 2, step 0)" in logs
    assert metrics["steps"] == 44
    want = np.load(FIXTURES / f"{model}-digits-final-weights.npz")
    # The same variables in the same order (their auto-numbered names depend on what else the
    # process built) as the old version's straight run, up to float rounding on another CPU. Rounding
    # differs between CPUs (AVX2 and AVX-512 kernels sum in different orders) and 22 SGD steps carry it
    # on: on an AVX-512 EPYC tiny's weights landed up to 5e-3 from the fixture's, 2.0% of how far epoch
    # 2 moved them (airbench's: 5e-6 of it). So each variable must land within 5% of that distance; a
    # resume that trained nothing would land at 100%, and lost optimizer state or a shifted schedule or
    # data order would add a share of it on top of the rounding.
    start = load_run(str(FIXTURES / model), "latest").model.weights  # the checkpoint it resumed from
    assert len(t.model.weights) == len(want.files) == len(start)
    for v, k, s in zip(t.model.weights, want.files, start):
        err = np.linalg.norm(v.numpy() - want[k])
        moved = np.linalg.norm(want[k] - s.numpy())
        assert err <= 0.05 * moved + 1e-5 * np.linalg.norm(want[k]), (v.path, k, err, moved)


def test_a_run_checkpointed_before_the_layout_change_exports(tmp_path):
    from engine.contract import CONTRACT
    from engine.export.load import load_run
    exp = load_run(str(FIXTURES / "tiny"), "latest")
    assert exp.size == 32 and exp.metadata["contract"] == CONTRACT and len(exp.class_names) == 10
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    logits = exp.serve_fn()(images)["logits"].numpy()
    assert logits.shape == (4, 10) and np.all(np.isfinite(logits))


def test_loading_a_run_for_export_builds_it_in_float32_and_leaves_the_callers_policy(tmp_path):
    """An export's model is float32 whatever the caller's global Keras policy, and that policy is the
    caller's again afterwards: the same logits under mixed_bfloat16 as under float32."""
    import keras
    from engine.export.load import load_run
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    plain = load_run(str(FIXTURES / "tiny"), "latest").serve_fn()(images)["logits"].numpy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        exp = load_run(str(FIXTURES / "tiny"), "latest")
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert {layer.dtype_policy.name for layer in exp.model.layers} == {"float32"}
        np.testing.assert_array_equal(exp.serve_fn()(images)["logits"].numpy(), plain)
    finally:
        keras.mixed_precision.set_global_policy("float32")
