"""Fold each inference-mode BatchNorm into the convolution before it (for speed)."""
import numpy as np
from flax import traverse_util


def fold_batchnorm(variables, spec, epsilon=None):
    """`{"params": ...}` where every conv followed by BN gets kernel * s and bias b - mean * s,
    s = scale / sqrt(var + eps), computed in float64; the BatchNorms become identities.

    `spec` is the net's `ArchSpec` (`model.spec`): it says which conv each BatchNorm follows,
    and its `bn_epsilon` is eps unless `epsilon` is given.
    """
    epsilon = spec.bn_epsilon if epsilon is None else epsilon
    params = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables["params"]).items()}
    stats = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables["batch_stats"]).items()}
    for bn_path, conv in spec.conv_before_norm().items():
        scale = params.pop(bn_path + ("scale",)).astype(np.float64)
        shift = params.pop(bn_path + ("bias",)).astype(np.float64)
        s = scale / np.sqrt(stats[bn_path + ("var",)].astype(np.float64) + epsilon)
        kernel = params[conv + ("kernel",)]
        params[conv + ("kernel",)] = (kernel.astype(np.float64) * s).astype(kernel.dtype)
        params[conv + ("bias",)] = (shift - stats[bn_path + ("mean",)] * s).astype(kernel.dtype)
    return {"params": traverse_util.unflatten_dict(params)}
