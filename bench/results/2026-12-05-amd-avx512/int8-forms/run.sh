#!/usr/bin/env bash
# Every int8 form of one trained run, accuracy on all 10,000 test images and img/s at batch 256, each
# against the run itself in TensorFlow. RUN: a trained run directory (here: the README's default airbench run).
#   bash run.sh RUN OUT
set -euo pipefail
RUN=$1; OUT=$2; mkdir -p "$OUT"
X=$OUT/exports; mkdir -p "$X"
engine export onnx "$RUN" --out "$X/fp32.onnx"
engine export onnx "$RUN" --precision int8 --out "$X/int8-trt.onnx"                    # symmetric Q/DQ (TensorRT form)
engine export onnx "$RUN" --precision int8 --int8-target cpu --out "$X/int8-cpu.onnx"  # ORT's CPU form, chosen by CPU features
engine export openvino "$RUN" --out "$X/f32.xml"
engine export openvino "$RUN" --precision int8 --out "$X/nncf-int8.xml"               # NNCF post-training quantization
ev() { name=$1; shift; engine evaluate "$@" --against "tf:$RUN" --out "$OUT/$name.json"; }
ev onnx-fp32              "$X/fp32.onnx"
ev onnx-int8-trt-exact    "$X/int8-trt.onnx" --ort-optimization basic
ev onnx-int8-trt-fused    "$X/int8-trt.onnx"
ev onnx-int8-cpu          "$X/int8-cpu.onnx"
ev openvino-f32           "$X/f32.xml" --openvino-precision f32
ev openvino-bf16          "$X/f32.xml" --openvino-precision bf16
ev openvino-nncf-int8     "$X/nncf-int8.xml"
ev openvino-qdq-int8-trt  "$X/int8-trt.onnx" --backend openvino
ev openvino-qdq-int8-cpu  "$X/int8-cpu.onnx" --backend openvino
rm -rf "$X"
