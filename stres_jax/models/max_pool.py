"""torch's MaxPool3d in JAX, with torch's gradient: each window's gradient goes to its first
maximum (ties are common after a ReLU), which XLA's own gradient of a max-pool does not promise."""
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def max_pool(x, layer):
    """torch's MaxPool3d: its gradient goes to the first maximum of each window (`_max_pool_vjp`)."""
    return _max_pool(x, tuple(layer.kernel), tuple(layer.stride), tuple(layer.padding))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, kernel, stride, padding):
    return nn.max_pool(x, kernel, stride, tuple((p, p) for p in padding))


def _max_pool_fwd(x, kernel, stride, padding):
    y = _max_pool(x, kernel, stride, padding)
    return y, (x, y)


def _max_pool_vjp(kernel, stride, padding, residuals, g):
    """Each output's gradient to the first input of its window (in t, h, w order) that equals the
    maximum, as torch's kernel picks its index (ties are common after a ReLU: all-zero windows);
    placed back by strided padding, summed over the taps. XLA's select_and_scatter is 6x slower."""
    x, y = residuals
    xp = jnp.pad(x, ((0, 0),) + tuple((p, p) for p in padding) + ((0, 0),), constant_values=-jnp.inf)
    out, taken, dxp = y.shape[1:4], jnp.zeros(y.shape, bool), jnp.zeros(xp.shape, g.dtype)
    for start in itertools.product(*map(range, kernel)):
        window = xp[:, start[0]: start[0] + (out[0] - 1) * stride[0] + 1: stride[0],
                    start[1]: start[1] + (out[1] - 1) * stride[1] + 1: stride[1],
                    start[2]: start[2] + (out[2] - 1) * stride[2] + 1: stride[2]]
        hit = (window == y) & ~taken
        taken = taken | hit
        spread = [(0, 0, 0)] + [(b, n - b - (m - 1) * s - 1, s - 1) for b, n, m, s in
                                zip(start, xp.shape[1:4], out, stride)] + [(0, 0, 0)]
        dxp = dxp + lax.pad(jnp.where(hit, g, jnp.zeros((), g.dtype)), jnp.zeros((), g.dtype), spread)
    return (dxp[:, padding[0]: xp.shape[1] - padding[0], padding[1]: xp.shape[2] - padding[1],
                padding[2]: xp.shape[3] - padding[2]],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_vjp)
