"""GFLOP/s of one conv lowered several ways, against PyTorch, on a layer1-shaped input.

    python benchmarks/bench_conv.py [--shape 16 56 56 64] [--repeats 5] [--cpu-library ynnpack]

Lowerings: XLA's 3-D conv; `taps` (kt 2-D convs, summed: fast_conv.TapConv); `taps_in_channels`
(the kt time offsets stacked on the channel axis, one 2-D conv); `gemm` (im2col: all
kt*kh*kw offsets stacked on channels, one matmul). Not a test.
"""
import argparse
import itertools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

from stres_jax.runtime.xla_options import CPU_LIBRARIES, DEFAULT_CPU_LIBRARY, compiler_options


def xla3d(x, w):
    return lax.conv_general_dilated(x, w, (1, 1, 1), [(1, 1)] * 3, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def taps(x, w):
    n, t = x.shape[:2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    out = sum(lax.conv_general_dilated(xp[:, dt:dt + t].reshape((n * t,) + x.shape[2:]), w[dt], (1, 1),
                                       [(1, 1)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
              for dt in range(w.shape[0]))
    return out.reshape((n, t) + out.shape[1:])


def taps_in_channels(x, w):
    n, t = x.shape[:2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate([xp[:, dt:dt + t] for dt in range(w.shape[0])], axis=-1)
    kernel = jnp.transpose(w, (1, 2, 0, 3, 4)).reshape(w.shape[1], w.shape[2], -1, w.shape[4])
    out = lax.conv_general_dilated(stacked.reshape((n * t,) + stacked.shape[2:]), kernel, (1, 1), [(1, 1)] * 2,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out.reshape((n, t) + out.shape[1:])


def gemm(x, w):
    n, t, h, wd, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([xp[:, a:a + t, b:b + h, d:d + wd] for a, b, d in
                               itertools.product(range(3), range(3), range(3))], axis=-1)
    return (patches.reshape(-1, 27 * c) @ w.reshape(27 * c, -1)).reshape(n, t, h, wd, -1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", nargs=4, type=int, default=[16, 56, 56, 64], metavar=("T", "H", "W", "C"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-library", choices=sorted(CPU_LIBRARIES), default=DEFAULT_CPU_LIBRARY)
    args = parser.parse_args()
    t, h, w, c = args.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, t, h, w, c)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 3, c, c)).astype(np.float32) * 0.05
    flops = 2 * t * h * w * c * c * 27
    reference = np.asarray(jax.jit(xla3d)(x, kernel))
    conv = torch.nn.Conv3d(c, c, 3, padding=1, bias=False)
    conv.weight.data = torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2).copy())
    xt = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())
    runners = {"torch": lambda: conv(xt)}
    for fn in (xla3d, taps, taps_in_channels, gemm):
        jitted = jax.jit(fn, compiler_options=compiler_options(args.cpu_library))
        error = float(np.abs(np.asarray(jitted(x, kernel)) - reference).max() / np.abs(reference).max())
        print(f"{fn.__name__}: relative difference from XLA's 3-D conv {error:.1e}")
        runners[fn.__name__] = lambda j=jitted: j(x, kernel).block_until_ready()
    times = {name: [] for name in runners}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name:18s} {statistics.median(values) * 1e3:8.1f} ms  {flops / statistics.median(values) / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
