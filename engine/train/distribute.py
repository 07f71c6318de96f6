"""Which tf.distribute strategy a run uses, and which process of a cluster writes the run directory.

    --strategy auto         MultiWorkerMirroredStrategy if TF_CONFIG names more than one worker,
                            MirroredStrategy on more than one GPU (on as many of them as the
                            batch splits over evenly: 5 of 7 GPUs for a batch of 2000), else the
                            default strategy
    --strategy default      one device
    --strategy mirrored     all local GPUs (or the CPU) of this machine
    --strategy multiworker  MultiWorkerMirroredStrategy over the cluster in TF_CONFIG

Under MultiWorkerMirroredStrategy every worker runs the same program on its share of each global
batch; the chief (worker 0, or the task of type "chief") writes the run directory, the others write
to a temporary directory that is removed at the end (checkpoints are saved by all workers: saving
may run collective ops). `python -m engine.launch` starts N local workers with their TF_CONFIG.
A signal on any worker stops every worker at the same step (StopSignal).
"""
from __future__ import annotations

import json
import os
import signal
import threading

from engine.config import STRATEGIES
from engine.devices import gpus
from engine.errors import EngineError
from engine.train.resolve import batches_that_split, check_batch_split, replicas_that_split


def tf_config() -> dict | None:
    """The parsed and checked TF_CONFIG environment variable, or None if it is not set."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise EngineError(f"TF_CONFIG is not valid JSON: {e.msg} at character {e.pos}") from None
    cluster = cfg.get("cluster") if isinstance(cfg, dict) else None
    task = cfg.get("task") if isinstance(cfg, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise EngineError('TF_CONFIG needs "cluster" and "task" objects, e.g. {"cluster": {"worker": '
                          '["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    kind, index = task.get("type"), task.get("index")
    members = cluster.get(kind)
    if kind not in ("chief", "worker") or not isinstance(members, list):
        raise EngineError(f"TF_CONFIG task type {kind!r} must be chief or worker and be listed in its cluster")
    if not isinstance(index, int) or not 0 <= index < len(members):
        raise EngineError(f"TF_CONFIG task index {index!r} is not a position in its {len(members)} {kind} address(es)")
    return cfg


def num_workers(cfg: dict | None) -> int:
    if not cfg:
        return 1
    return sum(len(cfg["cluster"].get(kind, [])) for kind in ("chief", "worker"))


def gpu_devices() -> list[str]:
    """The names of this process's (logical) GPU devices: those MirroredStrategy() would use."""
    import tensorflow as tf
    return [d.name for d in tf.config.list_logical_devices("GPU")]


def make(name: str, batch_size: int | None = None, log=print):
    """Create the strategy. Must run before anything else initialises TensorFlow's runtime.
    `batch_size`, the global batch: under auto, the local GPUs it splits over evenly (said in the
    log); under any strategy, refused in one line unless it splits over the strategy's replicas."""
    strategy = _make(name, batch_size, log)
    if batch_size is not None:
        check_batch_split(batch_size, strategy.num_replicas_in_sync)
    return strategy


def _make(name: str, batch_size: int | None, log):
    import tensorflow as tf
    if name not in STRATEGIES:
        raise EngineError(f"unknown --strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    cfg = tf_config()
    if name == "auto":
        if num_workers(cfg) > 1:
            name = "multiworker"
        elif len(gpus()) > 1:
            local = gpu_devices()
            used = replicas_that_split(batch_size, len(local)) if batch_size else len(local)
            if used < len(local):
                fits = " or ".join(map(str, batches_that_split(batch_size, len(local))))
                log(f"strategy: mirrored over {used} of the {len(local)} GPUs: the batch of {batch_size} splits "
                    f"evenly over {used}, not {len(local)} (--batch-size {fits} uses all {len(local)})")
            if used == 1:
                return tf.distribute.get_strategy()
            return tf.distribute.MirroredStrategy(local[:used])
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(gpu_devices() or None)  # (None: the CPU)
    if cfg is None:
        raise EngineError("--strategy multiworker needs TF_CONFIG describing the cluster (see README), or "
                          "start local workers with python -m engine.launch")
    impl = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus()
            else tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(implementation=impl))


def is_multiworker(strategy) -> bool:
    import tensorflow as tf
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """True for the process that writes the run directory (every process outside a cluster)."""
    if not is_multiworker(strategy):
        return True
    resolver = strategy.cluster_resolver
    kind, index = resolver.task_type, resolver.task_id
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in resolver.cluster_spec().as_dict()


def shard(num_replicas: int, pipeline_id: int, num_pipelines: int, global_batch: int) -> tuple[int, int, int]:
    """(first replica of this input pipeline, its number of replicas, per-replica batch) for a global
    batch split evenly over `num_replicas` replicas."""
    per_replica = check_batch_split(global_batch, num_replicas)
    local = num_replicas // num_pipelines
    return pipeline_id * local, local, per_replica


class StopNow(BaseException):
    """A signal that stops the process at once (during start-up, or a second Ctrl-C): a BaseException,
    so that no `except Exception` in between swallows it."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame


class StopSignal:
    """SIGTERM (a scheduler's preemption notice) and SIGINT (Ctrl-C). While training, each is acted on
    at the next step boundary: checkpoint, then stop with a resume hint; a second Ctrl-C stops at once
    (the last checkpoint stays). During start-up, before there is anything to save, either stops at
    once. In a cluster any worker's signal stops every worker at the same step."""

    SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}

    def __init__(self, strategy):
        self.strategy, self.seen, self._any_worker, self._previous = strategy, None, None, {}
        self.training = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _on_signal(self, signum, frame):
        name = self.SIGNALS[signum]
        if not self.training or (name == "SIGINT" and self.seen == "SIGINT"):
            raise StopNow(name)
        self.seen = self.seen or name

    def requested(self) -> bool:
        if not is_multiworker(self.strategy):
            return self.seen is not None
        if self._any_worker is None:
            self._any_worker = any_worker(self.strategy)
        import tensorflow as tf
        return bool(self._any_worker(tf.constant(float(self.seen is not None))) > 0)


def any_worker(strategy):
    """A tf.function: the sum of a flag over every replica of `strategy`, all-reduced as float32.
    TensorFlow's collectives refuse an int32 (or bfloat16) all-reduce on GPUs ("Collective
    all-reduce does not support datatype DT_INT32 on DEVICE_GPU"); float32 is reduced on every
    device and, for 0/1 flags, exactly."""
    import tensorflow as tf
    return tf.function(lambda flag: strategy.reduce(
        "SUM", strategy.run(lambda f: tf.identity(tf.cast(f, tf.float32)), args=(flag,)), axis=None))
