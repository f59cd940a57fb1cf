"""BatchNorm with PyTorch's training rule, under flax's parameter and statistic names.

In training mode PyTorch normalises with the biased batch variance but updates
`running_var` with the unbiased one (n / (n - 1)); flax's `nn.BatchNorm` uses the biased one
for both, so its running variances drift from torch's where few elements make a statistic.
Statistics are computed in at least float32 (float64 when the net runs in float64). Under
`jax.jit` over a data-parallel mesh the mean is over the whole global batch.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


class TorchBatchNorm(nn.Module):
    """Drop-in for `nn.BatchNorm` (same fields the nets use, same variables: `scale`, `bias`
    in params; `mean`, `var` in batch_stats)."""
    use_running_average: bool = False
    momentum: float = 0.9   # flax's convention: 1 - PyTorch's momentum
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        mean_var = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        var_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        train = not self.use_running_average
        y, stats = torch_batch_norm(x, scale, bias, mean_var.value, var_var.value, train=train,
                                    epsilon=self.epsilon, momentum=self.momentum, dtype=self.dtype)
        if train and not self.is_initializing():
            mean_var.value, var_var.value = stats
        return y


def torch_batch_norm(x, scale, bias, mean, var, *, train, epsilon, momentum, dtype=None):
    """`(y, (new running mean, new running var))` of a BatchNorm over the last axis by PyTorch's
    rules (the linen and NNX modules both call this). `momentum` is flax's (1 - PyTorch's); in
    eval mode the running statistics come back unchanged."""
    features = x.shape[-1]
    stat_dtype = jnp.promote_types(dtype or x.dtype, jnp.float32)
    dtype = dtype or x.dtype
    if train:
        rows = x.astype(stat_dtype).reshape(-1, features)
        y, batch_mean, batch_var = _normalize_batch(rows, scale.astype(stat_dtype), bias.astype(stat_dtype), epsilon)
        batch_mean, batch_var = lax.stop_gradient(batch_mean), lax.stop_gradient(batch_var)
        count = rows.shape[0]
        new_mean = (momentum * mean + (1 - momentum) * batch_mean).astype(mean.dtype)
        unbiased = batch_var * (count / max(count - 1, 1))
        new_var = (momentum * var + (1 - momentum) * unbiased).astype(var.dtype)
        return y.reshape(x.shape).astype(dtype), (new_mean, new_var)
    inv = scale.astype(stat_dtype) * jnp.reciprocal(jnp.sqrt(var.astype(stat_dtype) + epsilon))
    y = (x.astype(stat_dtype) - mean.astype(stat_dtype)) * inv + bias.astype(stat_dtype)
    return y.astype(dtype), (mean, var)


def _column_sums(rows):
    """Sums over the rows of (M, C) as a matrix-vector product: on the CPU, XLA's GEMV is 4-7x
    faster than its reduce for these sizes (a training step's BatchNorms spent ~20% in reduce)."""
    return jnp.dot(jnp.ones((rows.shape[0],), rows.dtype), rows, precision=lax.Precision.HIGHEST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _normalize_batch(rows, scale, bias, epsilon):
    """(M, C) -> (normalised rows * scale + bias, batch mean, biased batch variance (two-pass,
    as torch normalises)). The statistics' own gradients are not propagated: callers stop them."""
    return _normalize_batch_fwd(rows, scale, bias, epsilon)[0]


def _normalize_batch_fwd(rows, scale, bias, epsilon):
    count = rows.shape[0]
    mean = _column_sums(rows) / count
    centred = rows - mean
    var = _column_sums(jnp.square(centred)) / count
    inv = jnp.reciprocal(jnp.sqrt(var + epsilon))
    normalised = centred * inv
    return (normalised * scale + bias, mean, var), (normalised, inv, scale)


def _normalize_batch_bwd(epsilon, residuals, cotangents):
    normalised, inv, scale = residuals
    dy = cotangents[0]
    count = dy.shape[0]
    dbias = _column_sums(dy)
    dscale = _column_sums(dy * normalised)
    drows = (scale * inv / count) * (count * dy - dbias - normalised * dscale)
    return drows, dscale, dbias


_normalize_batch.defvjp(_normalize_batch_fwd, _normalize_batch_bwd)
