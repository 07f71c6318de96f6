"""The machine a measurement ran on, as bench/results' machine.txt files give it: the date, the CPU's
model name, core count, family and model numbers, the flags the engine's speed depends on
(engine.devices.cpu_features: AVX2, AVX-512, bfloat16 in hardware, AMX, ...) and the TensorFlow and Keras
versions.

    python -m bench.machine        (bench/reference/sitting.sh and bench.ablation write it)
"""
from __future__ import annotations

import re
import subprocess
import time

from engine import devices


def describe() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    lines = [time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime())]
    lines += [line for line in lscpu if re.match(r"Model name|CPU\(s\)|Thread\(s\) per core", line)]
    family, model = devices.cpu_family_model()
    lines += [f"cpu family\t: {family}", f"model\t\t: {model}"]
    lines.append("flags: " + " ".join(devices.cpu_features()))
    import keras
    import tensorflow as tf
    lines.append(f"tensorflow {tf.__version__} keras {keras.__version__}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(describe(), end="")
