"""`python -m engine.launch --workers N -- <engine.train flags>`: N local training workers.

Starts N `python -m engine.train --strategy multiworker` processes on free localhost ports, each with
its own TF_CONFIG, streams their output line by line with a `[worker i]` prefix, and fails fast: when
one worker exits with an error the others are terminated and the launcher exits with that worker's
code. SIGTERM and Ctrl-C are passed on to every worker (each checkpoints at its next step boundary
and stops: --resume continues). This is multi-worker training on one box, to try it before a cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from engine import devices
from engine.cli import Parser
from engine.errors import EngineError, cli


GRACE_SECONDS = 10  # after a worker fails, how long the others get to stop before they are killed


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on localhost (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("localhost", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_configs(ports: list[int]) -> list[dict]:
    workers = [f"localhost:{p}" for p in ports]
    return [{"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}} for i in range(len(ports))]


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names: the ones it already lists, else nvidia-smi's
    (no TensorFlow import: the launcher starts at once); empty without GPUs."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    return devices.nvidia_gpu_indices()


def gpu_shares(gpus: list[str], workers: int, cores: int | None = None) -> list[list[str]]:
    """Each worker's own GPUs: the same number for every worker (MultiWorkerMirroredStrategy needs
    it), in order; GPUs left over are not used. Fewer GPUs than workers is refused: two workers on
    one GPU are two NCCL ranks on one device, which NCCL refuses ("Duplicate GPU detected"), and
    each would take the GPU's memory. Without GPUs every worker runs on the CPU, with at least one of
    its `cores` (default: this machine's) each: more workers than cores is refused (each is a whole
    TensorFlow process holding its own copy of the data and model, for no speed)."""
    if not gpus:
        cores = cores or os.cpu_count() or 1
        if workers > cores:
            raise EngineError(f"--workers {workers} on the CPU needs a core per worker, and this machine has "
                              f"{cores}; use --workers {cores} or fewer")
        return [[] for _ in range(workers)]
    if len(gpus) < workers:
        have, fewer = (("1 GPU", "1") if len(gpus) == 1 else (f"{len(gpus)} GPUs", f"{len(gpus)} or fewer"))
        raise EngineError(f"--workers {workers} needs a GPU per worker, and this machine has {have} "
                          f"(CUDA_VISIBLE_DEVICES or nvidia-smi); use --workers {fewer}, or "
                          f"CUDA_VISIBLE_DEVICES=-1 to run the {workers} workers on the CPU")
    each = len(gpus) // workers
    return [gpus[i * each:(i + 1) * each] for i in range(workers)]


def unused_gpus(gpus: list[str], shares: list[list[str]]) -> list[str]:
    given = {g for share in shares for g in share}
    return [g for g in gpus if g not in given]


def worker_env(config: dict, threads: int, gpus: list[str] | None = None) -> dict:
    """The environment of one worker: its TF_CONFIG, its share of the cores and, on a GPU machine,
    its own GPUs (`gpus`: CUDA_VISIBLE_DEVICES names; None or empty leaves the GPUs as they are)."""
    env = dict(os.environ, TF_CONFIG=json.dumps(config), PYTHONUNBUFFERED="1")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    # N workers share this machine's cores: give each its share unless the user chose.
    env.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as engine train keeps it alone: its errors are one line
    return env


def parse(argv=None):
    p = Parser(prog="engine launch", description=__doc__.split("\n\n")[1])
    p.add_argument("--workers", type=int, default=2, help="number of local worker processes (default 2)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the engine.train flags for every worker")
    a = p.parse_args(argv)
    if a.workers < 1:
        raise EngineError(f"--workers must be at least 1, got {a.workers}")
    args = a.train_args[1:] if a.train_args[:1] == ["--"] else a.train_args
    if any(x == "--strategy" or x.startswith("--strategy=") for x in args):
        raise EngineError("engine.launch sets --strategy multiworker itself; drop --strategy from the train flags")
    return a.workers, args


def _stream(i: int, proc: subprocess.Popen, lock: threading.Lock, last_error: dict, said: set | None = None):
    """Worker i's output, each line marked with it; a warning or note that another worker already gave
    (the same text: every worker checks the same machine and flags) is not repeated (`said`: the ones given)."""
    for line in proc.stdout:
        if line.startswith(("error:", "preempted:")):
            last_error[i] = line.strip()
        with lock:
            if said is not None and line.startswith(("warning:", "note:")):
                if line in said:
                    continue
                said.add(line)
            sys.stdout.write(f"[worker {i}] {line}")
            sys.stdout.flush()


def _wait(procs: list) -> tuple[int, int | None]:
    """Wait for every worker; on the first failure stop the others (killed after GRACE_SECONDS).
    Returns (exit code, index of the first worker that failed or None)."""
    code, first_failed, kill_at = 0, None, None
    remaining = set(range(len(procs)))
    while remaining:
        if kill_at is not None and time.monotonic() > kill_at:
            for j in remaining:  # blocked in a collective op with a dead peer: SIGTERM cannot land
                procs[j].kill()
        for i in sorted(remaining):
            try:
                rc = procs[i].wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            remaining.discard(i)
            if rc != 0 and code == 0:
                code = rc if rc > 0 else 128 - rc  # killed by a signal: the shell's convention
                first_failed = i
                for j in remaining:  # fail fast: the others would wait for it forever
                    procs[j].terminate()
                kill_at = time.monotonic() + GRACE_SECONDS
    return code, first_failed


@cli
def main(argv=None):
    n, args = parse(argv)
    gpus = visible_gpus()
    shares = gpu_shares(gpus, n)  # (refuses before any worker starts)
    if not any(a == "--out" or a.startswith("--out=") for a in args):  # one folder for all the workers
        from engine.train import cli as train_cli
        from engine.train import resolve
        args = [*args, "--out", resolve.with_out(train_cli.parse(list(args))).run.out]
    threads = max(1, (os.cpu_count() or 1) // n)
    if unused_gpus(gpus, shares):
        print(f"warning: not used: GPU {', '.join(unused_gpus(gpus, shares))} (each of the {n} workers gets "
              f"{len(shares[0])}; every worker needs the same number)", file=sys.stderr)
    configs = tf_configs(free_ports(n))
    procs = [subprocess.Popen([sys.executable, "-m", "engine.train", *args, "--strategy", "multiworker"],
                              env=worker_env(c, threads, g), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, bufsize=1)
             for c, g in zip(configs, shares)]
    lock, last_error, said = threading.Lock(), {}, set()
    readers = [threading.Thread(target=_stream, args=(i, p, lock, last_error, said), daemon=True)
               for i, p in enumerate(procs)]
    for t in readers:
        t.start()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code, first_failed = _wait(procs)
    except KeyboardInterrupt:
        forward(None, None)
        for p in procs:
            p.wait()
        code, first_failed = 130, None
    finally:
        signal.signal(signal.SIGTERM, previous)
        for t in readers:
            t.join(timeout=5)
    if code and first_failed is not None:
        # The failing worker's own one-line message, said once more where the launcher reports.
        label, _, message = last_error.get(first_failed, "").partition(": ")
        if not message:
            label, message = "error", f"exited with code {code}"
        print(f"{label}: worker {first_failed}: {message} (the other workers were stopped)", file=sys.stderr)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
