"""Training: `python -m engine.train`. Importing this package imports no TensorFlow.

In the order a run goes through them:

    __main__.py       argv -> resolve -> Trainer
    resolve.py        the config a run trains with (model recipe, --recipe, flags, saved run) and
                      every check of it, before anything is built (no TensorFlow)
    distribute.py     the tf.distribute strategy, the chief, how a batch splits over replicas
    precision.py      float32 / mixed_bfloat16 / mixed_float16 (+ loss scaling)
    advice.py         what was measured to be slow on this kind of machine, said before a run
    optim.py          learning-rate schedules, optimizers (TorchSGD), the run's length in steps
    build.py          model + optimizer + TrainLoop for a config: a Training
    feature_cache.py  frozen-backbone features computed once; the head trains on them
    loop.py           the compiled mechanics: K train steps per tf.function call, eval, TTA
    lookahead.py      airbench's lookahead (a slow copy of the weights)
    session.py        the run folder's claim (--out, its lock), the data
    checkpoints.py    checkpoints and their restore, the history, the warm start (--init-from)
    trainer.py        Trainer: the outer loop (epochs, checkpoints, history, stop conditions)

From Python (a notebook):

    from engine import train
    from engine.train.resolve import defaults
    cfg = defaults("tiny").replace("data", data="digits").replace("run", out="runs/nb", overwrite=True)
    metrics = train.run(cfg)                     # the run's metrics.json, as a dict
"""


def run(config=None, log=print) -> dict:
    """Train one run in this process and return its metrics (what metrics.json holds). `config`: an
    engine.config.Config, e.g. `engine.train.resolve.defaults("tiny").replace(...)`; default: the
    default model's recipe. Every rule of the command line is checked first (resolve.check)."""
    from engine.train import resolve
    from engine.train.trainer import Trainer
    return Trainer(config if config is not None else resolve.defaults(), log=log).run()
