#!/bin/bash
# One sitting on one machine: the engine's default (seed 0), the reference airbench94 (PyTorch), then
# the default's other seeds; then the side-by-side table. Run it with nothing else on the CPU,
# in the engine's environment:
#
#   REF_PYTHON=/path/to/torch-env/bin/python bash bench/reference/sitting.sh OUT path/to/legacy/airbench94.py
#
# OUT: a new directory for the logs, runs and summary.md. The second argument is legacy/airbench94.py of
# https://github.com/KellerJordan/cifar10-airbench. Environment: ENGINE_DATA (the data, as for
# `engine train`), REF_PYTHON (a Python with torch; default: python), SEEDS (the engine's seeds,
# default "0 1 2"), REF_SEED (default 1), ENGINE_ARGS (extra `engine train` flags, default none: the
# default command), ENGINE_CACHE (default OUT/cache, empty, so the speed choice is measured as on a new
# machine).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "error: usage: bash bench/reference/sitting.sh OUT path/to/legacy/airbench94.py" >&2; exit 2
fi
out=$1; upstream=$2
ref_python=${REF_PYTHON:-python}; seeds=${SEEDS:-0 1 2}; ref_seed=${REF_SEED:-1}; engine_args=${ENGINE_ARGS:-}
if [ -e "$out" ]; then echo "error: $out exists: give a new directory" >&2; exit 2; fi
if [ ! -f "$upstream" ]; then echo "error: $upstream: not found" >&2; exit 2; fi
if ! "$ref_python" -c "import torch" 2>/dev/null; then
  echo "error: $ref_python cannot import torch: set REF_PYTHON to a Python with torch (pip install torch)" >&2; exit 2
fi
mkdir -p "$out"; out=$(cd "$out" && pwd); upstream=$(cd "$(dirname "$upstream")" && pwd)/$(basename "$upstream")
case $ref_python in */*) ref_python=$(cd "$(dirname "$ref_python")" && pwd)/$(basename "$ref_python");; esac
cd "$(dirname "$0")/../.."  # the repository root, wherever the script was started from
export ENGINE_CACHE=${ENGINE_CACHE:-$out/cache} PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}
timed() { if [ -x /usr/bin/time ]; then /usr/bin/time -v "$@"; else "$@"; fi; }

{
  python -m bench.machine 2>/dev/null
  "$ref_python" -c "import torch; print('torch', torch.__version__, 'threads', torch.get_num_threads())"
} > "$out/machine.txt"

python -m bench.reference.data export "$out/reference"
"$ref_python" -m bench.reference.data pt "$out/reference"
python -m bench.reference.adapt "$upstream" "$out/reference/airbench94_cpu.py" --seed "$ref_seed"

engine_run() {  # the progress bar's lines are left out of the log
  echo "engine seed $1 start $(date -u +%T)"
  # shellcheck disable=SC2086
  (timed python -m engine.train --seed "$1" --out "$out/seed-$1" $engine_args) 2>&1 \
    | grep -av "step - loss" > "$out/seed-$1.log"
}
first=${seeds%% *}
engine_run "$first"
echo "reference seed $ref_seed start $(date -u +%T)"
(cd "$out/reference" && timed "$ref_python" airbench94_cpu.py) > "$out/reference-seed-$ref_seed.log" 2>&1
for s in $seeds; do
  if [ "$s" != "$first" ]; then engine_run "$s"; fi
done
echo "end $(date -u +%T)"
python -m bench.reference.summary "$out" | tee "$out/summary.md"
