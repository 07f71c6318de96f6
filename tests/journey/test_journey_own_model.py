"""The user's own model: the Keras tutorial's small CNN, saved as a .keras file, trained by the engine
on its default recipe, with no optimizer or learning-rate flags."""
import json
import math
import subprocess
import sys
import textwrap

from tests.journey.conftest import SUBSET

TUTORIAL_CNN = textwrap.dedent("""
    import keras
    from keras import layers
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(32, 3, activation="relu"), layers.BatchNormalization(), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"), layers.BatchNormalization(), layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save("my.keras")
""")


def test_the_tutorial_cnn_trains_out_of_the_box(engine, tmp_path, base_run):
    # base_run: the archive is decoded once, not by this test and another at the same time
    made = subprocess.run([sys.executable, "-c", TUTORIAL_CNN], cwd=tmp_path, env=engine.env, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    # 4096 images for 3 epochs (384 steps at the user recipe's batch 32): fewer steps leave the
    # tutorial's BatchNormalization moving statistics (momentum 0.99) mostly at their initial values,
    # and the test accuracy then lags far behind the training accuracy, under model.fit as here.
    p = engine.run("train", "--model", "my.keras", "--normalization", "unit", "--limit", "4096", "--limit-test",
                   "512", "--epochs", "3", "--out", "runs/mine", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    history = json.loads((tmp_path / "runs/mine/history.json").read_text())
    losses = [h["loss"] for h in history] + [h["val_loss"] for h in history]
    assert len(history) == 3 and all(math.isfinite(x) for x in losses), history
    assert history[-1]["loss"] < history[0]["loss"], f"the training loss went up: {history}"
    assert history[-1]["loss"] < math.log(10) * 1.5, f"the loss is far above chance's: {history}"
    accuracy = json.loads((tmp_path / "runs/mine/metrics.json").read_text())["test_accuracy"]
    assert accuracy >= 0.2, f"test accuracy {accuracy:.4f} (chance: 0.1)\n{p.stdout[-3000:]}"
