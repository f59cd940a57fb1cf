"""`python -m stres_jax.eval --config configs/r2plus1d.py --workdir W`: a thin absl entry
point over `stres_jax.eval.evaluate` (configs/r2plus1d.py shows the whole command)."""
import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from stres_jax.errors import UserError
from stres_jax.eval import evaluate


def define_flags():
    """The command's flags; defined only when run as a program, so importing stays side-effect free."""
    config_flags.DEFINE_config_file("config", None, "a config file, e.g. configs/r2plus1d.py",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "where predictions and results go (resumes if present)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax reports every read at INFO
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    if config is None or not workdir:
        raise app.UsageError("--config and --workdir are required")
    try:
        results = evaluate(config, workdir)
    except UserError as err:
        print(f"stres_jax.eval: error: {err}", file=sys.stderr)
        sys.exit(2)
    if results is not None:
        print(json.dumps({k: v for k, v in results.items() if k not in ("per_class", "skipped")}))
        print(f"skipped {len(results['skipped'])} videos; results in {workdir}/results.json")


def run():
    define_flags()
    app.run(main)
