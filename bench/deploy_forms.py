"""Every deploy form of one trained run, each evaluated against the run itself in TensorFlow: fp32 ONNX,
the int8 Q/DQ ONNX files (TensorRT's form, ONNX Runtime's CPU form), OpenVINO's f32 IR (f32 and bf16
inference) and its NNCF int8 IR; each ONNX int8 file under ONNX Runtime and OpenVINO. One
`engine evaluate FORM --against tf:RUN` JSON report per row in OUT (accuracy, agreement, max |Δlogit|,
img/s), and OUT/command.json with the command, the engine commit and the machine.

    python -m bench.deploy_forms RUN OUT [--data SOURCE] [--limit-test N] [--forms onnx-fp32,...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

QUICK = os.environ.get("ENGINE_BENCH_QUICK") == "1"

# form: the export (file name in OUT/exports, `engine export` arguments after RUN)
EXPORTS = {
    "fp32.onnx": ["onnx"],
    "int8-trt.onnx": ["onnx", "--precision", "int8"],                          # symmetric Q/DQ (TensorRT form)
    "int8-cpu.onnx": ["onnx", "--precision", "int8", "--int8-target", "cpu"],  # ONNX Runtime's CPU form
    "f32.xml": ["openvino"],
    "nncf-int8.xml": ["openvino", "--precision", "int8"],                      # NNCF post-training quantization
}
# row: (export, extra `engine evaluate` arguments)
FORMS = {
    "onnx-fp32": ("fp32.onnx", []),
    "onnx-int8-trt-exact": ("int8-trt.onnx", ["--ort-optimization", "basic"]),
    "onnx-int8-trt-fused": ("int8-trt.onnx", []),
    "onnx-int8-cpu": ("int8-cpu.onnx", []),
    "openvino-f32": ("f32.xml", ["--openvino-precision", "f32"]),
    "openvino-bf16": ("f32.xml", ["--openvino-precision", "bf16"]),
    "openvino-nncf-int8": ("nncf-int8.xml", []),
    "openvino-qdq-int8-trt": ("int8-trt.onnx", ["--backend", "openvino"]),
    "openvino-qdq-int8-cpu": ("int8-cpu.onnx", ["--backend", "openvino"]),
}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m bench.deploy_forms", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained run directory")
    p.add_argument("out", help="a new directory for the reports")
    p.add_argument("--forms", type=lambda s: s.split(","), default=list(FORMS), metavar="FORM[,FORM]",
                   help=f"rows to take (default: all of {', '.join(FORMS)})")
    p.add_argument("--data", help="the test data (default: the evaluate command's)")
    p.add_argument("--limit-test", type=int, default=0, help="a class-balanced subset of N test images (0: all)")
    p.add_argument("--quick", action="store_true", default=QUICK, help="fp32 ONNX on 64 images: proves the tool runs")
    a = p.parse_args(argv)
    if a.quick:
        a.forms, a.limit_test = ["onnx-fp32"], a.limit_test or 64
    if set(a.forms) - set(FORMS):
        p.error(f"--forms: unknown {','.join(sorted(set(a.forms) - set(FORMS)))}; choose from {', '.join(FORMS)}")
    if os.path.exists(a.out):
        p.error(f"{a.out} exists: give a new directory")
    from bench.conftest import provenance
    from engine.commands import main as engine
    exports = os.path.join(a.out, "exports")
    os.makedirs(exports)
    with open(os.path.join(a.out, "command.json"), "w") as f:
        json.dump(provenance("bench.deploy_forms", argv), f, indent=1)

    def run(*args):
        if engine(list(args)) not in (0, None):
            raise SystemExit(f"error: engine {' '.join(args)} failed")
    for name in dict.fromkeys(FORMS[form][0] for form in a.forms):
        run("export", *EXPORTS[name][:1], a.run, *EXPORTS[name][1:], "--out", os.path.join(exports, name))
    data = (["--data", a.data] if a.data else []) + (["--limit-test", str(a.limit_test)] if a.limit_test else [])
    reports = {}
    for form in a.forms:
        name, extra = FORMS[form]
        reports[form] = os.path.join(a.out, f"{form}.json")
        run("evaluate", os.path.join(exports, name), *extra, *data, "--against", f"tf:{a.run}", "--out", reports[form])
    shutil.rmtree(exports)
    return reports


if __name__ == "__main__":
    main()
