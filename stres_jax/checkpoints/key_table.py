"""The explicit torchvision-key <-> Flax-path table, and the conversion that checks it both ways."""
import jax
import numpy as np
from flax import traverse_util

from stres_jax.errors import UserError
from stres_jax.models import ARCH_SPECS, ConvLayer, NormLayer

CONV, BN, DENSE = "conv", "bn", "dense"
# per layout: (prefix of the backbone's keys, the stem's module, the classifier's module)
LAYOUTS = {"torchvision": ("", "stem", "fc"), "mmaction2": ("backbone.", "conv1", "cls_head.fc_cls")}


class KeyMismatchError(UserError, ValueError):
    """The state_dict does not fit the architecture."""


def _torch_modules(prefix, path, layers, sequential=True):
    """Table rows of ConvLayer/NormLayer rows: in torchvision they are an nn.Sequential whose
    ReLUs take an index too; a lone conv (Conv3DSimple, Conv3DNoTemporal) is the module itself."""
    layers = [layer for layer in layers if isinstance(layer, (ConvLayer, NormLayer))]  # pools have no keys
    if layers and all(layer.torch for layer in layers):  # named submodules (mmaction2's ConvModule)
        return [(f"{prefix}.{layer.torch}", path + (layer.name,), CONV if isinstance(layer, ConvLayer) else BN)
                for layer in layers]
    if not sequential:
        (layer,) = layers
        return [(prefix, path + (layer.name,), CONV if isinstance(layer, ConvLayer) else BN)]
    rows, index = [], 0
    for layer in layers:
        rows.append((f"{prefix}.{index}", path + (layer.name,), CONV if isinstance(layer, ConvLayer) else BN))
        index += 2 if isinstance(layer, NormLayer) and layer.relu else 1
    return rows


def key_table(arch):
    """[(source module prefix, Flax module path, kind)] for every layer of `arch` (a name or an
    `ArchSpec`), read from the stem's and each block's rows, in the arch's layout (torchvision's
    names, or mmaction2's `backbone.` / `cls_head.` ones)."""
    spec = ARCH_SPECS[arch] if isinstance(arch, str) else arch
    backbone, stem, head = LAYOUTS[spec.layout]
    table = _torch_modules(backbone + stem, ("stem",), spec.stem.layers())
    for block in spec.blocks():
        rows = block.rows()
        for group in rows.main + rows.shortcut:
            table += _torch_modules(f"{backbone}{block.torch_name}.{group.torch}", (block.name,) + tuple(group.path),
                                    group.layers, group.sequential)
    table.append((head, ("fc",), DENSE))
    return table


def head_key(arch):
    """The source key of the classifier's weight ("fc.weight", mmaction2's "cls_head.fc_cls.weight")."""
    spec = ARCH_SPECS[arch] if isinstance(arch, str) else arch
    return f"{LAYOUTS[spec.layout][2]}.weight"


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


_INVERSE = {"kernel": {5: lambda w: w.transpose(4, 3, 0, 1, 2), 2: lambda w: w.T}}


def flax_to_torch(variables, arch):
    """A torchvision state_dict (numpy arrays) from Flax variables: the key table read backwards.
    BatchNorm's `num_batches_tracked` is 0 (a training counter this port does not keep)."""
    flat = traverse_util.flatten_dict(jax.device_get(variables))
    state = {}
    for prefix, path, kind in key_table(arch):
        for key, leaf, _ in _leaves(prefix, path, kind):
            value = np.asarray(flat[leaf])
            state[key] = _INVERSE.get(leaf[-1], {}).get(value.ndim, lambda w: w)(value)
        if kind == BN:
            state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    return state


def guess_arch(state_dict):
    """Which net a torchvision-layout state_dict looks like (a name, or a family of names), or None."""
    depth = 34 if "layer1.2.conv1.0.weight" in state_dict or "layer1.2.conv1.0.0.weight" in state_dict else 18
    if "stem.3.weight" in state_dict:
        wide = state_dict.get("layer2.0.conv2.0.0.weight")
        if depth == 34 and wide is not None and wide.shape[0] == 288:  # Caffe2's width rule: the IG-65M nets
            fc = state_dict.get("fc.weight")
            kind = "kinetics" if fc is not None and fc.shape[0] == 400 else "ig65m"
            return f"r2plus1d_34_8_{kind} or r2plus1d_34_32_{kind}"
        return f"r2plus1d_{depth}"
    kernel = state_dict.get("layer2.0.conv1.0.weight")
    if kernel is None or kernel.ndim != 5:
        return None
    return f"mc3_{depth}" if kernel.shape[2] == 1 else f"r3d_{depth}"


def _flax_shape(shape, leaf):
    """The Flax shape a torch tensor of `shape` becomes at `leaf` (the table's transforms, on shapes)."""
    if leaf[-1] == "kernel" and len(shape) == 5:  # OIDHW -> DHWIO
        return tuple(shape[i] for i in (2, 3, 4, 1, 0))
    if leaf[-1] == "kernel" and len(shape) == 2:
        return tuple(shape[::-1])
    return tuple(shape)


def check_shapes(shapes, arch, abstract_variables):
    """KeyMismatchError unless `shapes` ({torch key: shape}) fills every leaf of `arch` exactly once
    with the right shape; needs no tensor data (the reader checks a file before reading it)."""
    guess = guess_arch({k: np.broadcast_to(np.float32(0), v) for k, v in shapes.items()})  # views: no memory
    table, arch = key_table(arch), arch if isinstance(arch, str) else "this net"
    hint = f" (the checkpoint looks like {guess}; pass --arch {guess.split(' or ')[0]})" if guess and arch not in guess.split(" or ") else ""
    expected = traverse_util.flatten_dict(jax.tree.map(lambda x: x.shape, abstract_variables))
    filled, used = set(), set()
    for prefix, path, kind in table:
        for key, leaf, _ in _leaves(prefix, path, kind):
            if key not in shapes:
                raise KeyMismatchError(f"checkpoint has no key {key!r} needed by {arch}{hint}")
            if leaf not in expected:
                raise KeyMismatchError(f"{arch} has no variable {'/'.join(leaf)} for key {key!r}")
            if _flax_shape(shapes[key], leaf) != tuple(expected[leaf]):
                raise KeyMismatchError(
                    f"key {key!r}: checkpoint shape {tuple(shapes[key])} does not fit "
                    f"{'/'.join(leaf)} of shape {tuple(expected[leaf])} in {arch}{hint}")
            filled.add(leaf)
            used.add(key)
        if kind == BN:
            counter = f"{prefix}.num_batches_tracked"  # a training counter; nothing to port
            if counter in shapes and tuple(shapes[counter]) not in ((), (1,)):
                raise KeyMismatchError(f"key {counter!r}: checkpoint shape {tuple(shapes[counter])}, a counter is ()")
            used.add(counter)
    unused = sorted(k for k in shapes if k not in used)
    if unused:
        raise KeyMismatchError(f"checkpoint key {unused[0]!r} is not used by {arch}{hint}"
                               + (f" ({len(unused) - 1} more unused keys)" if len(unused) > 1 else ""))
    missing = sorted("/".join(p) for p in expected if p not in filled)
    if missing:
        raise KeyMismatchError(f"{arch} variable {missing[0]} was not filled by the checkpoint")


def torch_to_flax(state_dict, arch, abstract_variables, dtype=np.float32):
    """Flax variables for `arch` (a name or an `ArchSpec`) from a torchvision state_dict, every
    key checked both ways (`check_shapes`).

    `abstract_variables` is the model's variable tree (shapes only, e.g. from
    `jax.eval_shape(model.init, ...)`); every leaf must be filled by exactly one key. Values
    become `dtype` (float64 for the training parity tests).
    """
    check_shapes({k: tuple(np.shape(v)) for k, v in state_dict.items()}, arch, abstract_variables)
    filled = {}
    for prefix, path, kind in key_table(arch):
        for key, leaf, transform in _leaves(prefix, path, kind):
            value = np.asarray(state_dict[key], dtype)
            filled[leaf] = transform(value) if transform else value
    return traverse_util.unflatten_dict(filled)
