"""Where a training step's time goes: one conv's forward, input gradient and weight gradient,
JAX (each lowering, with the project's CPU options) against PyTorch, interleaved, ms (median).
PyTorch computes a gradient only after its forward, so its gradient times are (forward +
gradient) minus the forward; JAX's jitted gradients need no forward (the conv is linear).

    python benchmarks/bench_conv_grad.py --shape 4 16 56 56 64 --kernel 3 3 3
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from stres_jax.models.conv_impls import CONV_IMPLS
from stres_jax.runtime.xla_options import compiler_options


def timed(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def jax_fns(x, kernel_size, features, library, impl="taps"):
    pad = [(k // 2, k // 2) for k in kernel_size]
    conv = CONV_IMPLS[impl](features, kernel_size, padding=pad, use_bias=False)
    params = conv.init(jax.random.key(0), x[:1])
    options = compiler_options(library)
    y = conv.apply(params, x)
    cotangent = jnp.ones_like(y)

    def out(p, inputs):
        return conv.apply(p, inputs)
    forward = jax.jit(out, compiler_options=options)
    grad_x = jax.jit(lambda p, i, g: jax.vjp(lambda v: out(p, v), i)[1](g)[0], compiler_options=options)
    grad_w = jax.jit(lambda p, i, g: jax.vjp(lambda q: out(q, i), p)[1](g)[0], compiler_options=options)
    return {"forward": lambda: forward(params, x).block_until_ready(),
            "grad input": lambda: grad_x(params, x, cotangent).block_until_ready(),
            "grad weight": lambda: jax.block_until_ready(grad_w(params, x, cotangent))}


def torch_fns(x, kernel_size, features):
    conv = torch.nn.Conv3d(x.shape[1], features, kernel_size, padding=[k // 2 for k in kernel_size], bias=False)
    with torch.no_grad():
        cotangent = torch.ones_like(conv(x))
    xg = x.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            conv(x)

    def grad_input():
        torch.autograd.grad(conv(xg), xg, cotangent)

    def grad_weight():
        torch.autograd.grad(conv(x), conv.weight, cotangent)
    return {"forward": forward, "grad input": grad_input, "grad weight": grad_weight}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=5, default=[4, 16, 56, 56, 64], help="N T H W C")
    parser.add_argument("--kernel", type=int, nargs=3, default=[3, 3, 3])
    parser.add_argument("--features", type=int, default=0, help="output channels (default: C)")
    parser.add_argument("--library", default="xla")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--impls", nargs="+", default=["taps", "onednn"], choices=sorted(CONV_IMPLS),
                        help="JAX lowerings to time (default: taps onednn)")
    args = parser.parse_args()
    n, t, h, w, c = args.shape
    features = args.features or c
    x = np.random.default_rng(0).standard_normal((n, t, h, w, c), np.float32)
    ours = {impl: jax_fns(jnp.asarray(x), tuple(args.kernel), features, args.library, impl) for impl in args.impls}
    theirs = torch_fns(torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous(), tuple(args.kernel), features)
    forward_ms = None
    for name in theirs:
        torch_ms = timed(theirs[name], args.repeats)
        if forward_ms is None:
            forward_ms = torch_ms
        else:
            torch_ms -= forward_ms
        cells = []
        for impl, fns in ours.items():
            jax_ms = timed(fns[name], args.repeats)
            cells.append(f"{impl} {jax_ms:8.1f} ms ({torch_ms / jax_ms:.2f}x)")
        print(f"{name:12s} torch {torch_ms:8.1f} ms   " + "   ".join(cells), flush=True)


if __name__ == "__main__":
    main()
