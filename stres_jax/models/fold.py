"""Fold each inference-mode BatchNorm into the convolution before it (for speed)."""
import numpy as np
from flax import traverse_util

EPSILON = 1e-5


def conv_before(bn_path, params):
    """The path of the conv whose output the BatchNorm at `bn_path` normalises."""
    *parent, name = bn_path
    parent = tuple(parent)
    if name == "bn":
        return parent + ("conv",)
    if name in ("bn1", "bn2"):  # after a whole builder: its last conv
        builder = parent + ("conv" + name[-1],)
        return builder + (("temporal",) if builder + ("temporal", "kernel") in params else ("conv",))
    base = name.removesuffix("_bn")
    return parent + (("downsample_conv",) if base == "downsample" else (base,))


def fold_batchnorm(variables, epsilon=EPSILON):
    """`{"params": ...}` where every conv followed by BN gets kernel * s and bias b - mean * s,
    s = scale / sqrt(var + eps), computed in float64; the BatchNorms become identities."""
    params = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables["params"]).items()}
    stats = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables["batch_stats"]).items()}
    for bn_path in sorted({key[:-1] for key in stats}):
        conv = conv_before(bn_path, params)
        scale = params.pop(bn_path + ("scale",)).astype(np.float64)
        shift = params.pop(bn_path + ("bias",)).astype(np.float64)
        s = scale / np.sqrt(stats[bn_path + ("var",)].astype(np.float64) + epsilon)
        kernel = params[conv + ("kernel",)]
        params[conv + ("kernel",)] = (kernel.astype(np.float64) * s).astype(kernel.dtype)
        params[conv + ("bias",)] = (shift - stats[bn_path + ("mean",)] * s).astype(kernel.dtype)
    return {"params": traverse_util.unflatten_dict(params)}
