"""`python -m stres_jax.train --config configs/finetune.py --workdir W`: a thin absl entry point
over `stres_jax.train.run.train`. A run started again with the same workdir resumes."""
import sys

from stres_jax.cli.absl_entry import run_program


def train_and_report(config, workdir):
    from stres_jax.train.run import TrainingStopped, train
    try:
        final = train(config, workdir)
    except TrainingStopped as stopped:
        print(f"stres_jax.train: {stopped}", file=sys.stderr)
        sys.exit(143)
    if final is not None:
        print(f"wrote {final}")


def run():
    run_program("stres_jax.train", "a training config, e.g. configs/finetune.py",
                "checkpoints, metrics.jsonl, tensorboard/, best/ and final/ go here", train_and_report)
