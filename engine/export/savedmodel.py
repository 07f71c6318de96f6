"""TensorFlow SavedModel with a `serving_default` signature of the exported contract."""
from __future__ import annotations

import json
import os

import tensorflow as tf

from engine import files
from engine.export.load import Exportable, writing


def export_savedmodel(exp: Exportable, out: str, overwrite: bool = False) -> str:
    files.claim_output(out, overwrite, folder=True,
                       replaceable=lambda p: os.path.isfile(os.path.join(p, "saved_model.pb")))
    module = tf.Module()
    module.model = exp.model
    module.serve = exp.serve_fn()
    with writing(out), files.atomic_dir(out) as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
        with open(os.path.join(tmp, "assets.extra.engine.json"), "w") as f:
            json.dump(exp.metadata, f, indent=2)
    return out
