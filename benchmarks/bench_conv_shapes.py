"""Forward time of every conv shape in the three nets at batch 1: torch's Conv3d, the tap
lowering and the oneDNN lowering, each jitted with the project's CPU options (ms, median of 7).

    python benchmarks/bench_conv_shapes.py

Not a test: the table goes in BENCHMARKS.md ("oneDNN's 3-D convolutions").
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from bench_conv_grad import timed  # this script's folder is on sys.path
from stres_jax.models import onednn
from stres_jax.models.fast_conv import tap_conv
from stres_jax.runtime.xla_options import compiler_options

SHAPES = [  # (name, input NTHWC, kernel, output channels, strides, padding)
    ("stem 3x7x7", (1, 16, 112, 112, 3), (3, 7, 7), 64, (1, 2, 2), (1, 3, 3)),
    ("layer1 3x3x3", (1, 16, 56, 56, 64), (3, 3, 3), 64, (1, 1, 1), (1, 1, 1)),
    ("layer2.0 3x3x3 s2", (1, 16, 56, 56, 64), (3, 3, 3), 128, (2, 2, 2), (1, 1, 1)),
    ("layer2 3x3x3", (1, 8, 28, 28, 128), (3, 3, 3), 128, (1, 1, 1), (1, 1, 1)),
    ("layer3.0 3x3x3 s2", (1, 8, 28, 28, 128), (3, 3, 3), 256, (2, 2, 2), (1, 1, 1)),
    ("layer3 3x3x3", (1, 4, 14, 14, 256), (3, 3, 3), 256, (1, 1, 1), (1, 1, 1)),
    ("layer4.0 3x3x3 s2", (1, 4, 14, 14, 256), (3, 3, 3), 512, (2, 2, 2), (1, 1, 1)),
    ("layer4 3x3x3", (1, 2, 7, 7, 512), (3, 3, 3), 512, (1, 1, 1), (1, 1, 1)),
    ("downsample 1x1x1 s2", (1, 16, 56, 56, 64), (1, 1, 1), 128, (2, 2, 2), (0, 0, 0)),
    ("mc3 layer2 1x3x3", (1, 16, 28, 28, 128), (1, 3, 3), 128, (1, 1, 1), (0, 1, 1)),
    ("(2+1)D temporal 3x1x1", (1, 16, 56, 56, 144), (3, 1, 1), 64, (1, 1, 1), (1, 0, 0)),
    ("(2+1)D spatial 1x3x3", (1, 16, 56, 56, 64), (1, 3, 3), 144, (1, 1, 1), (0, 1, 1)),
]


def main():
    print("| conv | torch | taps | onednn |\n|---|---|---|---|")
    for name, shape, kernel, features, strides, padding in SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal(kernel + (shape[-1], features)).astype(np.float32)
        pads = tuple((p, p) for p in padding)
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        taps = jax.jit(lambda x, w: tap_conv(x, w, strides, pads), compiler_options=compiler_options())
        ours = jax.jit(lambda x, w: onednn.onednn_conv3d(x, w, strides, pads), compiler_options=compiler_options())
        conv = torch.nn.Conv3d(shape[-1], features, kernel, stride=strides, padding=padding, bias=False)
        xt = torch.from_numpy(x).permute(0, 4, 1, 2, 3).contiguous()

        def torch_forward():
            with torch.no_grad():
                conv(xt)
        times = (timed(torch_forward, 7), timed(lambda: taps(xj, wj).block_until_ready(), 7),
                 timed(lambda: ours(xj, wj).block_until_ready(), 7))
        print(f"| {name} | " + " | ".join(f"{t:.1f}" for t in times) + " |", flush=True)


if __name__ == "__main__":
    main()
