"""The default `engine train` on a machine of 1 to 8 GPUs: --strategy auto mirrors over as many of
them as the batch splits over evenly and says so; a strategy the user names is refused in one line
when the batch does not split over it. No GPU exists here: the machine's GPUs are logical CPU
devices, and engine.train.distribute's GPU lists are pointed at them."""
import json

from engine.train import resolve
from tests.conftest import run_with_cpu_devices

FAKE_GPUS = """
import json
from engine.errors import EngineError
from engine.train import distribute
def fake_gpus(n):
    names = [d.name for d in tf.config.list_logical_devices("CPU")][:n]
    distribute.gpus = lambda: names
    distribute.gpu_devices = lambda: names
"""


def test_the_default_command_runs_on_1_to_8_gpus_and_says_what_it_chose():
    batches = sorted({resolve.defaults().optim.batch_size, resolve.defaults("airbench").optim.batch_size})
    p = run_with_cpu_devices(FAKE_GPUS + f"""
out = {{}}
for batch in {batches}:
    for n in range(1, 9):
        fake_gpus(n)
        said = []
        s = distribute.make("auto", batch, said.append)
        out[f"{{batch}} {{n}}"] = [s.num_replicas_in_sync, said]
print(json.dumps(out))
""", devices=8)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert batches == [1024, 2000]
    for key, (replicas, said) in out.items():
        batch, gpus = map(int, key.split())
        assert batch % replicas == 0 and replicas == resolve.replicas_that_split(batch, gpus), key
        assert bool(said) == (replicas < gpus), (key, said)
    assert out["2000 7"][1] == ["strategy: mirrored over 5 of the 7 GPUs: the batch of 2000 splits evenly over 5, "
                                "not 7 (--batch-size 1995 or 2002 uses all 7)"]
    assert out["2000 6"][0] == 5 and out["1024 3"][0] == 2 and out["2000 8"] == [8, []]


def test_a_named_strategy_the_batch_does_not_split_over_is_refused_with_batches_that_do():
    p = run_with_cpu_devices(FAKE_GPUS + """
fake_gpus(3)
print("replicas", distribute.make("mirrored", 2001).num_replicas_in_sync)
try:
    distribute.make("mirrored", 2000)
except EngineError as e:
    print("refused", e)
""", devices=3)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert lines[-2:] == ["replicas 3", "refused --batch-size 2000 does not split evenly over 3 replicas; "
                                        "use a multiple of 3 (1998 or 2001)"]


def test_a_run_on_7_gpus_trains_on_the_most_its_batch_splits_over_and_records_it(tmp_path):
    out = tmp_path / "run"
    p = run_with_cpu_devices(FAKE_GPUS + f"""
fake_gpus(7)
from engine.train import cli
from engine.train.trainer import Trainer
Trainer(cli.parse(["--model", "tiny", "--data", "digits", "--epochs", "1", "--batch-size", "60", "--no-amp",
                   "--no-xla", "--quiet", "--out", {str(out)!r}])).run()
""", devices=7)
    assert p.returncode == 0, p.stderr[-3000:]
    assert ("strategy: mirrored over 6 of the 7 GPUs: the batch of 60 splits evenly over 6, not 7 "
            "(--batch-size 56 or 63 uses all 7)") in p.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == 6 and metrics["batch_size"] == 60
