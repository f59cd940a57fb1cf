"""BatchNorm with PyTorch's training rule, under flax's parameter and statistic names.

In training mode PyTorch normalises with the biased batch variance but updates
`running_var` with the unbiased one (n / (n - 1)); flax's `nn.BatchNorm` uses the biased one
for both, so its running variances drift from torch's where few elements make a statistic.
Statistics are computed in at least float32 (float64 when the net runs in float64). Under
`jax.jit` over a data-parallel mesh the mean is over the whole global batch.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


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
        stat_dtype = jnp.promote_types(self.dtype or x.dtype, jnp.float32)
        mean_var = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        var_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        if self.use_running_average:
            mean, var = mean_var.value.astype(stat_dtype), var_var.value.astype(stat_dtype)
        else:
            axes = tuple(range(x.ndim - 1))
            wide = x.astype(stat_dtype)
            mean = wide.mean(axes)
            var = jnp.square(wide - mean).mean(axes)  # biased, two-pass, as torch normalises
            if not self.is_initializing():
                count = x.size // features
                keep = self.momentum
                mean_var.value = (keep * mean_var.value + (1 - keep) * mean).astype(mean_var.value.dtype)
                unbiased = var * (count / max(count - 1, 1))
                var_var.value = (keep * var_var.value + (1 - keep) * unbiased).astype(var_var.value.dtype)
        dtype = self.dtype or x.dtype
        inv = (scale.astype(stat_dtype) * jnp.reciprocal(jnp.sqrt(var + self.epsilon)))
        y = (x.astype(stat_dtype) - mean) * inv + bias.astype(stat_dtype)
        return y.astype(dtype)
