#!/bin/sh
# The start of Dockerfile.gpu's image: `docker run ... engine:gpu engine.train ARGS` runs
# `python -m engine.train ARGS`. First it says, in one line, when the runs volume cannot be written by the
# user the container runs as: a bind mount shows the host folder's owner (Docker creates a missing one as
# root), which the image's default user, uid 10001, is not. ENGINE_RUNS: the volume's path (/runs).
runs=${ENGINE_RUNS:-/runs}
if [ -d "$runs" ] && ! [ -w "$runs" ]; then
    echo "warning: $runs is not writable by uid $(id -u) (it belongs to uid $(stat -c %u "$runs")): create the" \
         "folder first (mkdir -p runs) and run the container as its owner," \
         'docker run --user "$(id -u):$(id -g)" ...' >&2
fi
exec python -m "$@"
