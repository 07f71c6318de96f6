"""Training: `python -m engine.train`. Importing this package imports no TensorFlow.

Who owns what (each module decides its part and nothing else):

    cli.py, __main__.py  `engine train`: argv -> resolve -> Trainer
    resolve.py        the config: model recipe, --recipe, file, flags, a saved run; every rule of it,
                      before anything is built (no TensorFlow)
    startup.py        the order of a run's start, once (start -> RunStart): run folder and lock,
                      data, speed choice, build, warm start, config.json, feeds, checkpoints
    speed.py          the speed choice (--amp/--xla auto), with precision.py (the mixed policy,
                      loss scaling) and advice.py (what is slow on this kind of machine)
    distribute.py     the tf.distribute strategy, the chief, a batch over replicas, the stop signal
    compile_cache.py  XLA's compiled steps kept between runs
    build.py          assembly: model + optimizer (optim.py, muon.py) + TrainLoop: a Training
    loop.py           per-step mechanics: K train steps per tf.function call, eval, TTA, lookahead.py
    feeds.py, feature_cache.py  the datasets the loop reads; frozen-backbone features computed once
    trainer.py        epochs, train calls, evaluation, stop rules (stop_rules.py), metrics (clock.py)
    actions.py        what an epoch's end does, in order: history, checkpoints, stop, early stop
    checkpoints.py    checkpoints and their restore, the history, the warm start (--init-from)

From Python (a notebook):

    from engine import train
    from engine.train.resolve import defaults
    cfg = defaults("tiny").replace("data", data="digits").replace("run", out="runs/nb", overwrite=True)
    metrics = train.run(cfg)                     # the run's metrics.json, as a dict
"""


def run(config=None, log=print, warn=None) -> dict:
    """Train one run in this process and return its metrics (what metrics.json holds). `config`: an
    engine.config.Config, e.g. `engine.train.resolve.defaults("tiny").replace(...)`; default: the
    default model's recipe. Every rule of the command line is checked first (resolve.check). `log`
    receives the run's lines, `warn` its warnings (default: `warning: ...` on stderr)."""
    from engine.train import resolve, startup
    from engine.train.trainer import Trainer
    return Trainer(config if config is not None else resolve.defaults(), log=log,
                   warn=warn or startup.warn_on_stderr).run()
