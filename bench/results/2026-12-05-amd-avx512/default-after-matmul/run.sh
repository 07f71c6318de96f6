#!/bin/bash
# The default after the matmul weight gradient: seed 0, an empty cache (the speed probe runs).
cd /tmp/sit3 && . /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/sit3 ENGINE_DATA=/work/shared/data/cifar10-jpeg.tar.gz ENGINE_CACHE=/tmp/sit3/cache
lscpu | grep -E "Model name|^CPU\(s\)"; grep -m1 -E "cpu family" /proc/cpuinfo; grep -m1 "^model\s" /proc/cpuinfo
echo "default seed 0 start $(date -u +%T)"
( /usr/bin/time -v python -m engine.train --out runs/seed-0 ) 2>&1 | grep -av "step - loss"; echo rc=$?
echo "end $(date -u +%T)"
