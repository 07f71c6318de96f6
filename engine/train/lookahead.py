"""airbench's lookahead: a slow copy of the weights that the fast weights are pulled back to."""
from __future__ import annotations

import tensorflow as tf

from engine.recipes import LOOKAHEAD_DECAY, LOOKAHEAD_EVERY


class Lookahead:
    """Every EVERY steps the slow copy moves toward the weights, slow = d * slow + (1 - d) * w with
    d = DECAY^EVERY * (step / total)^3, and the weights are set to it. Covers every float variable of
    the model (BatchNorm statistics too). `finish()` copies the slow weights into the model: they
    are the final model."""
    EVERY = LOOKAHEAD_EVERY

    def __init__(self, model, total_steps: int):
        self.total = float(max(total_steps, 1))
        self.weights = [w for w in model.weights if w.dtype in ("float32", "float16", "bfloat16")]
        self.slow = [tf.Variable(w.value, trainable=False, name="slow") for w in self.weights]

    def reset(self):
        """Start the slow copy from the current weights (after a data-dependent init)."""
        for s, w in zip(self.slow, self.weights):
            s.assign(w.value)

    def update(self, step):
        frac = tf.cast(step, tf.float32) / self.total
        decay = LOOKAHEAD_DECAY ** self.EVERY * frac ** 3
        for s, w in zip(self.slow, self.weights):
            s.assign(decay * s + (1.0 - decay) * tf.cast(w.value, s.dtype))
        self.finish()

    def finish(self):
        for s, w in zip(self.slow, self.weights):
            w.assign(tf.cast(s, w.dtype))
