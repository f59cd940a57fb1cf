"""Peak memory of a net's inference, torch's against ours, each in a fresh process holding its own
stack alone (what a user's process would hold):

    python benchmarks/peak_memory.py --arch ir_csn_152 --batch 1 2 --variants onednn+fold@xla
    python benchmarks/peak_memory.py --arch ir_csn_152 --train          # one training step each

The parent builds the reference net once (random weights, randomised BN statistics) and writes its
state to an .npz. The torch child rebuilds that net from the same seed and imports no JAX; each JAX
child reads the .npz and converts it as `stres-jax convert` does (`torch_to_flax`), importing no
torch. Each runs the net twice: the process peak (VmHWM) is the figure to compare; the working
memory is what the second run adds once all is built (peak reset after freed heap is trimmed).
bench_models.py --peak-memory prints the same table beside its timings.
"""
import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def status_gb(field):
    """A /proc/self/status memory field (VmRSS, VmHWM: the peak RSS) in GB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 2**20


def reset_peak():
    """Hand freed heap back (malloc_trim: a compile's or first run's buffers stay resident
    otherwise), then reset this process's peak RSS to its current RSS (Linux); returns that RSS in GB."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_gb("VmRSS")


def _twice(run):
    """Run, reset the peak, run again: (process peak GB, GB the second run added)."""
    run()
    rest = reset_peak()
    run()
    peak = status_gb("VmHWM")
    return peak, peak - rest


def random_clip(shape):
    """The benchmarks' input, (N, T, H, W, 3): standard normal float32, seed 0."""
    import numpy as np
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def labels(shape):
    import numpy as np
    return np.arange(shape[0]) % 400


def torch_child(arch, shape, train):
    import torch
    sys.path.insert(0, str(HERE.parent))
    from tests.torch_reference import reference_net
    if train:
        from train_steppers import torch_stepper
        return _twice(torch_stepper(reference_net(arch), random_clip(shape), labels(shape)))
    net = reference_net(arch).eval()
    x = torch.from_numpy(random_clip(shape)).permute(0, 4, 1, 2, 3).contiguous()
    with torch.inference_mode():
        return _twice(lambda: net(x))


def jax_child(arch, shape, variant, dtype, state_file, train):
    """`variant`: a bench_models variant (inference), or a bench_train IMPL[@CPU_LIBRARY] (`train`)."""
    import numpy as np
    from jax_runners import jax_runner
    if train:
        from train_steppers import jax_stepper
        with np.load(state_file) as archive:
            state = {name: archive[name] for name in archive.files}
        return _twice(jax_stepper(arch, state, random_clip(shape), labels(shape), dtype, variant))
    from stres_jax.checkpoints.key_table import torch_to_flax
    from stres_jax.models import create_model
    from stres_jax.models.init import abstract_variables
    with np.load(state_file) as archive:
        state = {name: archive[name] for name in archive.files}
    classes = next(v.shape[0] for k, v in state.items() if k.endswith("fc.weight") or k.endswith("fc_cls.weight"))
    variables = torch_to_flax(state, arch, abstract_variables(create_model(arch, num_classes=classes)))
    del state
    x = random_clip(shape)
    run = jax_runner(arch, variables, variant, dtype, x)
    del variables  # the runner holds what it needs (the folded copy when it folds)
    return _twice(lambda: run(x))


def peak_memory(arch, batches, variants, dtype="float32", train=False):
    """{(batch, runner): (process peak GB, working GB)}, "torch" and each JAX variant a fresh process;
    `train`: a training step each instead of inference."""
    import numpy as np
    sys.path.insert(0, str(HERE.parent))
    from tests.torch_reference import reference_net
    from jax_runners import clip_shape
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        state_file = Path(tmp) / "state.npz"
        np.savez(state_file, **{k: v.numpy() for k, v in reference_net(arch).state_dict().items()})
        for batch in batches:
            shape = clip_shape(arch, batch)
            for name in ["torch", *variants]:
                call = (f"torch_child({arch!r}, {shape}, {train})" if name == "torch"
                        else f"jax_child({arch!r}, {shape}, {name!r}, {dtype!r}, {str(state_file)!r}, {train})")
                code = f"import sys, json; sys.path.insert(0, {str(HERE)!r}); from peak_memory import *; print(json.dumps({call}))"
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{name} at batch {batch} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
                peaks[batch, name] = tuple(json.loads(out.stdout.strip().splitlines()[-1]))
    return peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="r2plus1d_18")
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--variants", nargs="+", default=None,
                        help="bench_models variants (default onednn+fold@xla); with --train, bench_train IMPLs (default auto)")
    parser.add_argument("--train", action="store_true", help="a training step (train-mode BN, SGD) instead of inference")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    variants = args.variants or (["auto"] if args.train else ["onednn+fold@xla"])
    print(f"{'arch':12s} {'batch':>5s} {'runner':20s} {'peak RSS GB':>11s} {'working GB':>10s}")
    for (batch, name), (peak, working) in peak_memory(args.arch, args.batch, variants, args.dtype, args.train).items():
        print(f"{args.arch:12s} {batch:5d} {name:20s} {peak:11.2f} {working:10.2f}", flush=True)


if __name__ == "__main__":
    main()
