"""Seconds per clip of the JAX nets against torchvision (and onnxruntime on our export), side by side.

    python benchmarks/bench_models.py                          # all nets, batch 1 and 8, CPU
    python benchmarks/bench_models.py --archs r2plus1d_18 --batch-sizes 1 --repeats 7
    python benchmarks/bench_models.py --variants taps+fold@xla taps+fold@ynnpack xla@xla
    python benchmarks/bench_models.py --archs r2plus1d_34_32_kinetics --batch-sizes 1 4   # 32-frame clips
    python benchmarks/bench_models.py --variants onednn+fold@xla nnx-split/onednn+fold@xla nnx-jit/onednn+fold@xla
    python benchmarks/bench_models.py --archs ir_csn_152 ip_csn_152 --batch-sizes 1 2 --repeats 3 \
        --variants onednn+fold@xla taps+fold@xla          # against mmaction2's ResNet3dCSN, 32x224x224

A variant is LOWERING[+fold][@CPU_LIBRARY]: the conv lowering (stres_jax.models.conv_impls),
whether BN is folded, and the compile options (stres_jax.runtime.xla_options; default "default").

Runs are interleaved (torch, then each JAX variant, then onnxruntime, repeated), so the
ratios compare like with like on a noisy machine. Compile time is reported separately.
torchvision runs on CUDA (cuDNN) when torch sees a GPU. `--dtype bfloat16` runs JAX in
bfloat16 and, on a GPU, torchvision under autocast (AMP) to bfloat16; on the CPU torchvision
stays float32 (its bf16 3-D conv took 299 s per mc3 clip here, BENCHMARKS.md):

    python benchmarks/bench_models.py --batch-sizes 32 --variants xla+fold xla --dtype bfloat16  # GPU

Not a test: the numbers go in BENCHMARKS.md and the issue notes.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.torch_reference
from tests.torch_reference import reference_net  # noqa: E402

from jax_runners import DEFAULT_VARIANTS, clip_shape, jax_runner, onnx_runner  # noqa: E402
from peak_memory import peak_memory, random_clip  # noqa: E402

from stres_jax.checkpoints.key_table import torch_to_flax  # noqa: E402
from stres_jax.models.init import abstract_variables  # noqa: E402
from stres_jax.models import create_model  # noqa: E402


def bench(arch, batch, variants, repeats, dtype, with_onnx):
    """{runner: [s/clip of each repeat]}, {variant: compile s}."""
    net = reference_net(arch)  # torchvision's, the IG-65M publisher's definition, or mmaction2's
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    classes = next(v.shape[0] for k, v in state.items() if k.endswith("fc.weight") or k.endswith("fc_cls.weight"))
    variables = torch_to_flax(state, arch, abstract_variables(create_model(arch, num_classes=classes)))
    x = random_clip(clip_shape(arch, batch))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device)
    x_torch = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous().to(device)
    amp = dtype == "bfloat16" and device == "cuda"

    def torch_run(_):
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=amp):
            net(x_torch)
        if device == "cuda":
            torch.cuda.synchronize()
    runners = {"torch": torch_run}
    compile_s = {}
    for variant in variants:
        runners[variant] = jax_runner(arch, variables, variant, dtype, x)
        start = time.perf_counter()
        runners[variant](x)
        compile_s[variant] = time.perf_counter() - start
    if with_onnx:
        runners["onnxruntime"] = onnx_runner(arch, variables)
    times = {name: [] for name in runners}
    for name, run in runners.items():
        run(x)  # warm-up
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append((time.perf_counter() - start) / batch)
    return times, compile_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["r3d_18", "mc3_18", "r2plus1d_18"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, metavar="VARIANT",
                        help=f"LOWERING[+fold][@CPU_LIBRARY] (default: {' '.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--onnx", action="store_true", help="also time onnxruntime on our export")
    parser.add_argument("--peak-memory", action="store_true",
                        help="also report each runner's peak RSS, in a fresh process of its own stack (peak_memory.py)")
    args = parser.parse_args()
    torch_on = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, torch {torch.__version__} "
          f"on {torch_on}; JAX in {args.dtype}")
    print(f"{'arch':12s} {'batch':>5s} {'runner':20s} {'median s/clip':>14s} {'min s/clip':>11s} "
          f"{'clips/s':>8s} {'torch/this':>10s} {'compile s':>9s}")
    summary = []
    for arch in args.archs:
        for batch in args.batch_sizes:
            times, compile_s = bench(arch, batch, args.variants, args.repeats, args.dtype, args.onnx)
            torch_median = statistics.median(times["torch"])
            for name, values in times.items():
                median = statistics.median(values)
                print(f"{arch:12s} {batch:5d} {name:20s} {median:14.3f} {min(values):11.3f} "
                      f"{1 / median:8.2f} {torch_median / median:10.2f} "
                      f"{compile_s.get(name, float('nan')):9.1f}", flush=True)
            if args.peak_memory:
                peaks = peak_memory(arch, [batch], args.variants, args.dtype)
                print(f"{arch:12s} {batch:5d} peak RSS GB (a process of its own stack each; the run's working GB): "
                      + ", ".join(f"{name} {gb:.2f} ({above:.2f})" for (_, name), (gb, above) in peaks.items()), flush=True)
            best = min(args.variants, key=lambda v: statistics.median(times[v]))
            summary.append(f"{arch}@{batch}: {best} {torch_median / statistics.median(times[best]):.2f}x")
    print("ratio torch/JAX (best variant): " + ", ".join(summary))


if __name__ == "__main__":
    main()
