"""FLOPs per image of a Keras model, to set a step's achieved FLOP/s against the machine's measured
peak (bench/test_peak.py): the engine's own count (engine.models.flops), which runs report in their
metrics.json."""
from engine.models.flops import forward_flops, layer_flops, train_flops  # noqa: F401
