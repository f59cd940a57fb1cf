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
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.torch_reference
from tests.torch_reference import reference_net  # noqa: E402

from stres_jax.checkpoints.key_table import torch_to_flax  # noqa: E402
from stres_jax.models.init import abstract_variables  # noqa: E402
from stres_jax.models import ARCH_SPECS, create_model  # noqa: E402
from stres_jax.models.conv_impls import conv_factory  # noqa: E402
from stres_jax.models.fold import fold_batchnorm  # noqa: E402
from stres_jax.runtime.xla_options import compiler_options  # noqa: E402

DEFAULT_VARIANTS = ["xla@xla", "taps+fold@ynnpack", "taps+fold@xla"]


def parse_variant(name):
    """"taps+fold@ynnpack" -> ("taps", True, "ynnpack")."""
    lowering, _, library = name.partition("@")
    impl, _, fold = lowering.partition("+")
    if fold not in ("", "fold"):
        raise SystemExit(f"variant {name!r}: expected LOWERING[+fold][@CPU_LIBRARY]")
    return impl, fold == "fold", library or "default"


def nnx_runner(arch, variables, variant, dtype, x):
    """The NNX net's forward: "nnx-jit/VARIANT" under `nnx.jit` (the module graph walked each call;
    it takes no compiler options, so @CPU_LIBRARY is ignored), "nnx-split/VARIANT" split once and a
    pure function of the state under `jax.jit` with the variant's options (the README's)."""
    from flax import nnx
    import stres_jax.nnx as snnx
    call, variant = variant.split("/", 1)
    impl, fold, library = parse_variant(variant)
    model = snnx.create_model(arch, variables["params"]["fc"]["kernel"].shape[1], impl, dtype, fold_batchnorm=fold)
    snnx.load_variables(model, fold_batchnorm(variables, model.spec) if fold else variables)
    if call == "nnx-jit":
        forward = nnx.jit(lambda m, x: m(x))
        return lambda x: forward(model, x).block_until_ready()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x), compiler_options=compiler_options(library))
    return lambda x: forward(state, x).block_until_ready()


def jax_runner(arch, variables, variant, dtype, x):
    """The variant's forward, compiled on `x`. "onednn-reorder" is "onednn" reordering every
    kernel on each call (the inference forward otherwise keeps them in oneDNN's layout);
    "onednn-unfused" leaves bias, residual and ReLU to XLA instead of oneDNN's post-ops;
    "nnx-jit/VARIANT" and "nnx-split/VARIANT" run the NNX net (`nnx_runner`)."""
    if variant.startswith("nnx-"):
        return nnx_runner(arch, variables, variant, dtype, x)
    impl, fold, library = parse_variant(variant)
    switch = {"onednn-reorder": {"inference_target": "forward"}, "onednn-unfused": {"fuse_epilogue": False}}.get(impl)
    model = create_model(arch, num_classes=variables["params"]["fc"]["kernel"].shape[1],
                         conv=conv_factory("onednn" if switch else impl), fold_batchnorm=fold, dtype=dtype)
    variables = fold_batchnorm(variables, model.spec) if fold else variables
    forward = jax.jit(model.apply, compiler_options=compiler_options(library))
    if switch:
        from stres_jax.models import onednn
        with onednn.choosing(**switch):
            forward = forward.lower(variables, x).compile()  # traced now, with the switch set
    return lambda x: forward(variables, x).block_until_ready()


def onnx_runner(arch, variables):
    import onnxruntime
    from stres_jax.labels import kinetics400_labels
    from stres_jax.export.onnx_io import to_onnx
    session = onnxruntime.InferenceSession(to_onnx(arch, variables, kinetics400_labels()).SerializeToString())
    return lambda x: session.run(None, {"video": np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))})


def status_gb(field):
    """A /proc/self/status memory field (VmRSS, VmHWM: the peak RSS) in GB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 2**20


def reset_peak():
    """Hand freed heap back (malloc_trim: a compile's or first run's buffers stay resident
    otherwise), then reset this process's peak RSS to its current RSS (Linux); returns that RSS in GB."""
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_gb("VmRSS")


def input_size(arch):
    """112 (torchvision's crop); 224 for the CSN nets (mmaction2's validation CenterCrop)."""
    return 224 if "csn" in arch else 112


def bench(arch, batch, variants, repeats, dtype, with_onnx, only=None, before_runs=None):
    """{runner: [s/clip of each repeat]}, {variant: compile s}; `only` ("torch" or a variant): build
    and run that runner alone (`peak_memory`), calling `before_runs()` once all is built."""
    net = reference_net(arch)  # torchvision's, the IG-65M publisher's definition, or mmaction2's
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    classes = next(v.shape[0] for k, v in state.items() if k.endswith("fc.weight") or k.endswith("fc_cls.weight"))
    variables = torch_to_flax(state, arch, abstract_variables(create_model(arch, num_classes=classes)))
    size = input_size(arch)
    x = np.random.default_rng(0).standard_normal((batch, ARCH_SPECS[arch].clip_len, size, size, 3)).astype(np.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device)
    x_torch = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous().to(device)
    amp = dtype == "bfloat16" and device == "cuda"

    def torch_run(_):
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=amp):
            net(x_torch)
        if device == "cuda":
            torch.cuda.synchronize()
    runners = {"torch": torch_run} if only in (None, "torch") else {}
    compile_s = {}
    for variant in variants:
        runners[variant] = jax_runner(arch, variables, variant, dtype, x)
        start = time.perf_counter()
        runners[variant](x)
        compile_s[variant] = time.perf_counter() - start
    if with_onnx:
        runners["onnxruntime"] = onnx_runner(arch, variables)
    times = {name: [] for name in runners}
    if before_runs is not None:
        before_runs()
    for name, run in runners.items():
        run(x)  # warm-up
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append((time.perf_counter() - start) / batch)
    return times, compile_s


def peak_memory(arch, batch, runners, dtype):
    """{runner: (peak RSS GB, GB above the process at rest)} of a fresh process that builds that
    runner alone and runs it twice. Every process also holds the torch net and the converted
    variables, so the second figure is the runner's own working memory: the peak is reset
    (/proc/self/clear_refs) once all is built and compiled, and compared with the RSS then."""
    import subprocess
    peaks = {}
    for name in runners:
        code = (f"import sys; sys.argv = ['bench']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"import bench_models as b; rest = []; "
                f"b.bench({arch!r}, {batch}, {[n for n in [name] if n != 'torch']!r}, 1, {dtype!r}, False, "
                f"only={name!r}, before_runs=lambda: rest.append(b.reset_peak())); "
                "print(b.status_gb('VmHWM'), b.status_gb('VmHWM') - rest[0])")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        peak, above = map(float, out.split()[-2:])
        peaks[name] = (peak, above)
    return peaks


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
                        help="also report each runner's peak RSS, in a fresh process of its own")
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
                peaks = peak_memory(arch, batch, ["torch", *args.variants], args.dtype)
                print(f"{arch:12s} {batch:5d} peak RSS GB (a process each; its runs' own above the built process): "
                      + ", ".join(f"{name} {gb:.2f} ({above:.2f})" for name, (gb, above) in peaks.items()), flush=True)
            best = min(args.variants, key=lambda v: statistics.median(times[v]))
            summary.append(f"{arch}@{batch}: {best} {torch_median / statistics.median(times[best]):.2f}x")
    print("ratio torch/JAX (best variant): " + ", ".join(summary))


if __name__ == "__main__":
    main()
