"""`python -m stres_jax.eval --config configs/r2plus1d.py --workdir W`: a thin absl entry
point over `stres_jax.eval.evaluate` (configs/r2plus1d.py shows the whole command)."""
import json
import sys

from stres_jax.config.program import run_program


def evaluate_and_report(config, workdir):
    from stres_jax.eval.run import evaluate
    results = evaluate(config, workdir)
    if results is not None:
        print(json.dumps({k: v for k, v in results.items() if k not in ("per_class", "skipped", "run")}))
        print(f"skipped {len(results['skipped'])} videos; results in {workdir}/results.json")
        if results["skipped"]:  # as predict and embed: 1 when any video failed
            sys.exit(1)


SUMMARY = "evaluate a net on a dataset by torchvision's protocol (= python -m stres_jax.eval; --help lists the config)"


def run(prog="stres_jax.eval"):
    from stres_jax.config.base import get_base_config
    run_program(prog, "a config file, e.g. configs/r2plus1d.py",
                "where predictions and results go (a rerun of the same run resumes)", evaluate_and_report,
                "Evaluate a net on videos with torchvision's protocol (5 clips of 16 frames at 15 fps, centre crop),\n"
                "data-parallel over every device and host; writes W/predictions.jsonl and W/results.json.\n"
                "Example: stres-jax eval --config configs/r2plus1d.py --workdir /tmp/w \\\n"
                "             --config.data.root=/data/kinetics400/val", get_base_config, random_init_key="random_init")
