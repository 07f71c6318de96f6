"""`engine predict` says what it did to images that are not the model's: one note for those it converted
to the model's channels and one for those --resize scaled, from which sizes to which."""
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import ROOT

FIXTURE_RUN = ROOT / "tests/fixtures/runs-v0.1/tiny"  # trained on digits at 32x32x3


def test_resize_says_how_many_images_it_scaled_from_which_sizes_and_still_which_it_converted(tmp_path):
    shutil.copytree(FIXTURE_RUN, tmp_path / "runs/tiny")
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos/a-big.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos/b-big.png")
    Image.fromarray(rng.integers(0, 256, (24, 20), dtype=np.uint8)).save(tmp_path / "photos/c-grey-small.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)).save(tmp_path / "photos/d-rgba.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "photos/e-as-is.png")
    p = subprocess.run([sys.executable, "-m", "engine", "predict", "photos", "--model", "runs/tiny", "--resize",
                        "--topk", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 5, p.stdout
    notes = [line for line in p.stderr.splitlines() if line.startswith("note: ")]
    assert notes == ["note: converted 2 images from mode L, RGBA to RGB (transparency ignored)",
                     "note: resized 3 images from 40x40, 24x20 to the model's 32x32"], p.stderr
