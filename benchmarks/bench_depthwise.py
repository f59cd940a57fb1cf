"""Milliseconds of one channel-separated (depthwise) 3x3x3 conv, the CSN nets' conv2, lowered three
ways against torch's grouped conv3d, forward and forward + backward, interleaved.

    python benchmarks/bench_depthwise.py [--shape 8 28 28 256] [--stride 1] [--repeats 7]

Lowerings: XLA's grouped convolution (`feature_group_count`, conv_impl "xla"), the taps: 27
shifted multiply-adds fused by XLA (`fast_conv.depthwise_taps`, conv_impl "taps"), and "c++":
`native/depthwise.cc`'s one-pass forward and kernel gradient (`onednn.depthwise_conv3d`, what
"auto" and "onednn" run where the extension builds). Not a test: the numbers go in BENCHMARKS.md.
"""
import argparse
import statistics
import time

import jax
import numpy as np
import torch
from jax import lax

from stres_jax.models import onednn
from stres_jax.models.fast_conv import depthwise_taps
from stres_jax.runtime.xla_options import compiler_options


def xla_grouped(x, w, stride):
    return lax.conv_general_dilated(x, w, (stride,) * 3, [(1, 1)] * 3, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                    feature_group_count=x.shape[-1])


def taps(x, w, stride):
    return depthwise_taps(x, w, (stride,) * 3, ((1, 1),) * 3)


def one_pass(x, w, stride):
    return onednn.depthwise_conv3d(x, w, (stride,) * 3, ((1, 1),) * 3)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", nargs=4, type=int, default=[8, 28, 28, 256], metavar=("T", "H", "W", "C"))
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    t, h, w, c = args.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, t, h, w, c)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, 1, c)).astype(np.float32)
    conv = torch.nn.Conv3d(c, c, 3, args.stride, 1, groups=c, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2)))
    xt = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())
    reference = conv(xt).detach().numpy().transpose(0, 2, 3, 4, 1)
    runners = {}

    def torch_forward():
        with torch.no_grad():
            conv(xt)

    def torch_backward():
        xg = xt.clone().requires_grad_(True)
        conv(xg).sum().backward()
    runners["torch forward"], runners["torch fwd+bwd"] = torch_forward, torch_backward
    options = compiler_options()
    lowerings = [("xla grouped", xla_grouped), ("taps", taps)] + [("c++", one_pass)] * onednn.available()
    for name, fn in lowerings:
        forward = jax.jit(lambda a, b, fn=fn: fn(a, b, args.stride), compiler_options=options)
        grad = jax.jit(jax.grad(lambda a, b, fn=fn: fn(a, b, args.stride).sum(), argnums=(0, 1)),
                       compiler_options=options)
        error = np.abs(np.asarray(forward(x, kernel)) - reference).max() / np.abs(reference).max()
        print(f"{name}: relative difference from torch {error:.1e}")
        runners[f"{name} forward"] = lambda f=forward: f(x, kernel).block_until_ready()
        runners[f"{name} fwd+bwd"] = lambda g=grad: jax.block_until_ready(g(x, kernel))
    times = {name: [] for name in runners}
    for run in runners.values():
        run()
    for _ in range(args.repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - start))
    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"1x{c}x{t}x{h}x{w}, 3x3x3 depthwise, stride {args.stride}")
    for kind in ("forward", "fwd+bwd"):
        base = statistics.median(times[f"torch {kind}"])
        for name in ["torch"] + [name for name, _ in lowerings]:
            median = statistics.median(times[f"{name} {kind}"])
            print(f"  {kind:8s} {name:12s} {median:9.1f} ms  torch/this {base / median:6.2f}")


if __name__ == "__main__":
    main()
