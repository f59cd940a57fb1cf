"""The explicit torchvision-key <-> Flax-path table, and the conversion that checks it both ways."""
import jax
import numpy as np
from flax import traverse_util

from stres_jax.errors import UserError

from stres_jax.models import ARCH_SPECS, STAGE_NAMES, Conv2Plus1D, R2Plus1dStem, block_name

CONV, BN, DENSE = "conv", "bn", "dense"


class KeyMismatchError(UserError, ValueError):
    """The state_dict does not fit the architecture."""


def _builder_entries(src, dst, builder):
    if builder is Conv2Plus1D:
        return [(f"{src}.0", dst + ("spatial",), CONV), (f"{src}.1", dst + ("spatial_bn",), BN),
                (f"{src}.3", dst + ("temporal",), CONV)]
    return [(src, dst + ("conv",), CONV)]


def key_table(arch, stage_sizes=(2, 2, 2, 2)):
    """[(torchvision module prefix, Flax module path, kind)] for every layer of `arch`."""
    spec = ARCH_SPECS[arch]
    if spec["stem"] is R2Plus1dStem:
        table = [("stem.0", ("stem", "spatial"), CONV), ("stem.1", ("stem", "spatial_bn"), BN),
                 ("stem.3", ("stem", "temporal"), CONV), ("stem.4", ("stem", "temporal_bn"), BN)]
    else:
        table = [("stem.0", ("stem", "conv"), CONV), ("stem.1", ("stem", "bn"), BN)]
    for stage, (builder, blocks) in enumerate(zip(spec["builders"], stage_sizes), start=1):
        for index in range(blocks):
            src, dst = f"{STAGE_NAMES[stage - 1]}.{index}", (block_name(stage, index),)
            for conv in ("conv1", "conv2"):
                table += _builder_entries(f"{src}.{conv}.0", dst + (conv,), builder)
            table += [(f"{src}.conv1.1", dst + ("bn1",), BN), (f"{src}.conv2.1", dst + ("bn2",), BN)]
            if stage > 1 and index == 0:
                table += [(f"{src}.downsample.0", dst + ("downsample_conv",), CONV),
                          (f"{src}.downsample.1", dst + ("downsample_bn",), BN)]
    table.append(("fc", ("fc",), DENSE))
    return table


def _leaves(prefix, path, kind):
    """[(torch key, (collection, *flax path, leaf), transform)] for one table row."""
    if kind == CONV:  # OIDHW -> DHWIO
        return [(f"{prefix}.weight", ("params",) + path + ("kernel",), lambda w: w.transpose(2, 3, 4, 1, 0))]
    if kind == DENSE:
        return [(f"{prefix}.weight", ("params",) + path + ("kernel",), lambda w: w.T),
                (f"{prefix}.bias", ("params",) + path + ("bias",), None)]
    return [(f"{prefix}.weight", ("params",) + path + ("scale",), None),
            (f"{prefix}.bias", ("params",) + path + ("bias",), None),
            (f"{prefix}.running_mean", ("batch_stats",) + path + ("mean",), None),
            (f"{prefix}.running_var", ("batch_stats",) + path + ("var",), None)]


def guess_arch(state_dict):
    """Which of the three nets a torchvision state_dict looks like, or None."""
    if "stem.3.weight" in state_dict:
        return "r2plus1d_18"
    kernel = state_dict.get("layer2.0.conv1.0.weight")
    if kernel is None or kernel.ndim != 5:
        return None
    return "mc3_18" if kernel.shape[2] == 1 else "r3d_18"


def torch_to_flax(state_dict, arch, abstract_variables):
    """Flax variables for `arch` from a torchvision state_dict, every key checked both ways.

    `abstract_variables` is the model's variable tree (shapes only, e.g. from
    `jax.eval_shape(model.init, ...)`); every leaf must be filled by exactly one key.
    """
    guess = guess_arch(state_dict)
    hint = f" (the checkpoint looks like {guess}; pass --arch {guess})" if guess and guess != arch else ""
    expected = traverse_util.flatten_dict(jax.tree.map(lambda x: x.shape, abstract_variables))
    filled, used = {}, set()
    for prefix, path, kind in key_table(arch):
        for key, leaf, transform in _leaves(prefix, path, kind):
            if key not in state_dict:
                raise KeyMismatchError(f"checkpoint has no key {key!r} needed by {arch}{hint}")
            if leaf not in expected:
                raise KeyMismatchError(f"{arch} has no variable {'/'.join(leaf)} for key {key!r}")
            value = np.asarray(state_dict[key], np.float32)
            if value.ndim == len(expected[leaf]) and transform:
                value = transform(value)
            if value.shape != tuple(expected[leaf]):
                raise KeyMismatchError(
                    f"key {key!r}: checkpoint shape {tuple(state_dict[key].shape)} does not fit "
                    f"{'/'.join(leaf)} of shape {tuple(expected[leaf])} in {arch}{hint}")
            filled[leaf] = value
            used.add(key)
        if kind == BN:
            used.add(f"{prefix}.num_batches_tracked")  # a training counter; nothing to port
    unused = sorted(k for k in state_dict if k not in used)
    if unused:
        raise KeyMismatchError(f"checkpoint key {unused[0]!r} is not used by {arch}{hint}"
                               + (f" ({len(unused) - 1} more unused keys)" if len(unused) > 1 else ""))
    missing = sorted("/".join(p) for p in expected if p not in filled)
    if missing:
        raise KeyMismatchError(f"{arch} variable {missing[0]} was not filled by the checkpoint")
    return traverse_util.unflatten_dict(filled)
