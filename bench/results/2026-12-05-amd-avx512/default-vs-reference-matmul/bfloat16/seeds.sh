#!/bin/bash
# The default's three seeds after the probe fix, in the sitting of ../sit4 (its reference ran 14:27-14:49).
cd /tmp/sit5 && . /work/main/.venv/bin/activate
export PYTHONPATH=/tmp/sit5 ENGINE_DATA=/work/shared/data/cifar10-jpeg.tar.gz ENGINE_CACHE=/tmp/sit5/cache
lscpu | grep -E "Model name|^CPU\(s\)"; grep -m1 -E "cpu family" /proc/cpuinfo; grep -m1 "^model\s" /proc/cpuinfo
for s in 0 1 2; do echo "default seed $s start $(date -u +%T)"; ( /usr/bin/time -v python -m engine.train --seed $s --out runs/seed-$s ) 2>&1 | grep -av "step - loss"; echo rc=$?; done
echo "end $(date -u +%T)"
