"""`python -m stres_jax.train --config configs/finetune.py --workdir W`: a thin absl entry point
over `stres_jax.train.run.train`. A run started again with the same workdir resumes."""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from stres_jax.errors import UserError


def define_flags():
    config_flags.DEFINE_config_file("config", None, "a training config, e.g. configs/finetune.py",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, tensorboard/ and final/ go here")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    if config is None or not workdir:
        raise app.UsageError("--config and --workdir are required")
    from stres_jax.train.run import TrainingStopped, train
    try:
        final = train(config, workdir)
    except UserError as err:
        print(f"stres_jax.train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as stopped:
        print(f"stres_jax.train: {stopped}", file=sys.stderr)
        sys.exit(143)
    if final is not None:
        print(f"wrote {final}")


def run():
    define_flags()
    app.run(main)
