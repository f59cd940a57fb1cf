"""First load in a fresh process: `stres_jax.nnx.from_pretrained` against linen's `load_checkpoint`.

    python benchmarks/bench_load.py CHECKPOINT_DIR [--repeats 5]

Each repeat starts two new Python processes (linen, then NNX) and times the call alone, after
the imports; the ratio is the median NNX time over the median linen time. Not a test.
"""
import argparse
import statistics
import subprocess
import sys

CALLS = {
    "linen": "from stres_jax.checkpoints.store import load_checkpoint as load",
    "nnx": "from stres_jax.nnx import from_pretrained as load",
}
PROGRAM = "import time, jax\n{imp}\nt = time.perf_counter(); load({path!r}); print(time.perf_counter() - t)"


def first_load(api, path):
    code = PROGRAM.format(imp=CALLS[api], path=path)
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint directory (e.g. `stres-jax convert --random-init`)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = {api: [] for api in CALLS}
    for _ in range(args.repeats):
        for api in CALLS:
            times[api].append(first_load(api, args.checkpoint))
    medians = {api: statistics.median(values) for api, values in times.items()}
    for api, values in times.items():
        print(f"{api:6s} median {medians[api]:.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"nnx / linen: {medians['nnx'] / medians['linen']:.2f}x")


if __name__ == "__main__":
    main()
