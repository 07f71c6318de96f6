#!/bin/bash
# One sitting: the default (seed 0), the reference airbench94 (PyTorch), then the default's seeds 1 and 2.
cd /tmp/sit4 && . /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/sit4 ENGINE_DATA=/work/shared/data/cifar10-jpeg.tar.gz ENGINE_CACHE=/tmp/sit4/cache
lscpu | grep -E "Model name|^CPU\(s\)"; grep -m1 -E "cpu family" /proc/cpuinfo; grep -m1 "^model\s" /proc/cpuinfo
echo "default seed 0 start $(date -u +%T)"
( /usr/bin/time -v python -m engine.train --out runs/seed-0 ) 2>&1 | grep -av "step - loss"; echo rc=$?
echo "reference start $(date -u +%T)"
( cd /tmp/ref && /usr/bin/time -v /tmp/refvenv/bin/python airbench94.py ) > /tmp/sit4/reference-seed-1.log 2>&1; echo rc=$?
echo "seeds 1 2 start $(date -u +%T)"
for s in 1 2; do ( /usr/bin/time -v python -m engine.train --seed $s --out runs/seed-$s ) 2>&1 | grep -av "step - loss"; echo rc=$?; done
echo "end $(date -u +%T)"
