"""`python -m stres_jax.train --config configs/finetune.py --workdir W`: a thin absl entry point
over `stres_jax.train.run.train`. A run started again with the same workdir resumes."""

from stres_jax.config.program import run_program


def train_and_report(config, workdir):
    from stres_jax.train.run import train
    final = train(config, workdir)  # a signal: runtime.interrupt.Stopped, reported by run_program (130 / 143)
    if final is not None:
        print(f"wrote {final}")


SUMMARY = "fine-tune or train a net, resumable (= python -m stres_jax.train; --help lists the config)"


def run(prog="stres_jax.train"):
    from stres_jax.config.base import get_train_config
    run_program(prog, "a training config, e.g. configs/finetune.py",
                "checkpoints, metrics.jsonl, tensorboard/, best/ and final/ go here", train_and_report,
                "Fine-tune or train a net as torchvision's references do; resumable (run it again with the same\n"
                "workdir), SIGTERM saves first. Example: stres-jax train --config configs/finetune.py \\\n"
                "    --workdir /tmp/ft --config.data.root=videos/", get_train_config,
                random_init_key="from_scratch")
