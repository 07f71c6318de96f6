"""Where ONNX Runtime's time goes for a model's float32 export: the freshly initialised model exported
to ONNX, a batch of random images, one warm-up and `--runs` timed runs under ONNX Runtime's own
profiler; time per operator type, and the operators of the graph after ONNX Runtime's optimisations.

    python -m bench.ort_profile airbench [--batch 256] [--runs 5]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

QUICK = os.environ.get("ENGINE_BENCH_QUICK") == "1"


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m bench.ort_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="airbench")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up run")
    p.add_argument("--quick", action="store_true", default=QUICK, help="the tiny model, batch 8: proves the tool runs")
    a = p.parse_args(argv)
    if a.quick:
        a.model, a.batch, a.runs = "tiny", 8, 1
    import keras
    import numpy as np
    import onnx
    import onnxruntime as ort

    from bench.conftest import print_provenance
    from engine import models
    from engine.export.load import Exportable
    from engine.export.onnx import export_onnx
    from engine.kernels import Preprocess
    print_provenance("bench.ort_profile", argv)
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    spec = models.get(a.model)
    size = models.input_size(spec, 0)
    exportable = Exportable(models.build(spec.name, size, 10), Preprocess(size, spec.normalization),
                            [str(i) for i in range(10)], {}, data_source="")
    with tempfile.TemporaryDirectory() as d:
        path = export_onnx(exportable, os.path.join(d, f"{a.model}.onnx"))
        x = np.random.default_rng(0).integers(0, 256, (a.batch, 32, 32, 3), dtype=np.uint8)
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(d, a.model)
        options.optimized_model_filepath = os.path.join(d, f"{a.model}-opt.onnx")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        session.run(None, {"images": x})
        t0 = time.perf_counter()
        for _ in range(a.runs):
            session.run(None, {"images": x})
        img_s = a.runs * a.batch / (time.perf_counter() - t0)
        with open(session.end_profiling()) as f:
            events = json.load(f)
        optimised = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    by_op, nodes = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name")
            by_op[op] += e["dur"]
            nodes[op] += 1
    total = sum(by_op.values()) or 1
    print(f"{a.model}: {img_s:.0f} img/s at batch {a.batch}")
    for op, us in by_op.most_common(15):
        print(f"{op:28s} {us / 1e3 / (a.runs + 1):9.1f} ms/batch {us / total:6.1%}  nodes/run {nodes[op] // (a.runs + 1)}")
    print("optimized graph ops:", optimised.most_common())
    return dict(img_s=img_s, ms_by_op={op: us / 1e3 / (a.runs + 1) for op, us in by_op.items()})


if __name__ == "__main__":
    main()
