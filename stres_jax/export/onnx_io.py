"""ONNX export and import, written node by node with onnx.helper (jax2onnx mis-exported these nets).

The graph takes `(batch, 3, time, 112, 112)` float32 like torchvision's exports. Initializers
are named by their Flax paths, so import maps them back without guessing.
"""
import json

import numpy as np
import onnx
from flax import traverse_util
from onnx import TensorProto, helper, numpy_helper

from stres_jax.models.init import abstract_variables
from stres_jax.errors import UserError
from stres_jax.models import ARCH_SPECS, ConvLayer, PoolLayer, create_model

OPSET, IR_VERSION, FORMAT = 17, 8, "stres_jax-onnx-1"


class OnnxImportError(UserError, ValueError):
    """An ONNX file that does not map onto one of the three nets."""


class _GraphWriter:
    def __init__(self, flat_variables, bn_epsilon):
        self.flat, self.nodes, self.initializers, self.count = flat_variables, [], {}, 0
        self.bn_epsilon = bn_epsilon

    def _tensor(self, name, array):
        self.initializers[name] = numpy_helper.from_array(np.asarray(array, np.float32), name)
        return name

    def _node(self, op, inputs, **attributes):
        self.count += 1
        out = f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def conv(self, x, path, stride, pad, groups=1):
        kernel = self.flat[("params",) + path + ("kernel",)]
        weight = self._tensor("/".join(path) + "/kernel", np.transpose(kernel, (4, 3, 0, 1, 2)))
        grouped = {"group": groups} if groups > 1 else {}  # the channel-separated convs
        return self._node("Conv", [x, weight], kernel_shape=list(kernel.shape[:3]),
                          strides=list(stride), pads=list(pad) * 2, **grouped)

    def bn(self, x, path, relu=False):
        names = [self._tensor("/".join(path) + f"/{leaf}", self.flat[(col,) + path + (leaf,)])
                 for col, leaf in (("params", "scale"), ("params", "bias"),
                                   ("batch_stats", "mean"), ("batch_stats", "var"))]
        out = self._node("BatchNormalization", [x] + names, epsilon=self.bn_epsilon)
        return self._node("Relu", [out]) if relu else out

    def layers(self, x, path, layers):
        for layer in layers:
            if isinstance(layer, ConvLayer):
                x = self.conv(x, path + (layer.name,), layer.stride, layer.padding, layer.groups)
            elif isinstance(layer, PoolLayer):
                x = self._node("MaxPool", [x], kernel_shape=list(layer.kernel), strides=list(layer.stride),
                               pads=list(layer.padding) * 2)
            else:
                x = self.bn(x, path + (layer.name,), layer.relu)
        return x


def _write_graph(arch, flat):
    spec = ARCH_SPECS[arch] if isinstance(arch, str) else arch
    g = _GraphWriter(flat, spec.bn_epsilon)
    x = g.layers("video", ("stem",), spec.stem.layers())
    for block in spec.blocks():
        rows = block.rows()
        y, shortcut = x, x
        for group in rows.main:
            y = g.layers(y, (block.name,) + tuple(group.path), group.layers)
        for group in rows.shortcut:
            shortcut = g.layers(shortcut, (block.name,) + tuple(group.path), group.layers)
        x = g._node("Relu", [g._node("Add", [y, shortcut])])
    x = g._node("Flatten", [g._node("GlobalAveragePool", [x])])
    g._tensor("fc/kernel", flat[("params", "fc", "kernel")])
    g._tensor("fc/bias", flat[("params", "fc", "bias")])
    g.nodes.append(helper.make_node("Gemm", [x, "fc/kernel", "fc/bias"], ["logits"], name="fc"))
    return g


def to_onnx(arch, variables, labels, frames=None, size=None, preset=None):
    """An onnx.ModelProto of the net (`arch`: a name or an `ArchSpec`), with labels and preprocessing
    in metadata_props; `frames` and `size` (the crop) default to the `preset`'s (the arch's)."""
    preset = preset or (ARCH_SPECS[arch] if isinstance(arch, str) else arch).preset
    frames, size = frames or preset.clip_len, size or preset.crop
    flat = traverse_util.flatten_dict(variables)
    g = _write_graph(arch, {k: np.asarray(v) for k, v in flat.items()})
    arch = arch if isinstance(arch, str) else "custom"  # an ArchSpec of the caller's: not importable
    graph = helper.make_graph(
        g.nodes, f"stres_jax_{arch}",
        [helper.make_tensor_value_info("video", TensorProto.FLOAT, ["batch", 3, frames, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(labels)])],
        list(g.initializers.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="stres_jax", ir_version=IR_VERSION)
    helper.set_model_props(model, {"format": FORMAT, "arch": arch, "labels": json.dumps(labels),
                                   "preprocessing": json.dumps(preset.preprocessing()), "preset": json.dumps(preset.to_json()),
                                   "frames": str(frames)})
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_preset(path):
    """The preset an export recorded (None for files written before presets travelled)."""
    from stres_jax.models.preset import Preset
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return Preset.from_json(json.loads(props["preset"]), path) if "preset" in props else None


def from_onnx(path):
    """(arch, variables, labels) from an ONNX file written by `to_onnx`; refuses anything else."""
    try:
        model = onnx.load(str(path))
    except Exception as err:
        raise OnnxImportError(f"{path}: not a readable ONNX file ({err})") from None
    props = {p.key: p.value for p in model.metadata_props}
    arch = props.get("arch")
    if props.get("format") != FORMAT or arch not in ARCH_SPECS:
        raise OnnxImportError(f"{path}: not a stres_jax export (metadata format={props.get('format')!r}, "
                              f"arch={arch!r}); only graphs written by `stres-jax export-onnx` can be mapped")
    labels = json.loads(props.get("labels", "[]"))
    abstract = abstract_variables(create_model(arch, num_classes=len(labels)))
    expected = _write_graph(arch, {k: np.zeros(v.shape, np.float32) for k, v in
                                   traverse_util.flatten_dict(abstract).items()})
    found = [(n.op_type, list(n.input)) for n in model.graph.node]
    wanted = [(n.op_type, list(n.input)) for n in expected.nodes]
    for i, (ours, theirs) in enumerate(zip(wanted, found + [None] * len(wanted))):
        if ours != theirs:
            raise OnnxImportError(f"{path}: node {i} is {theirs}, but {arch} needs {ours}; "
                                  "the graph cannot be mapped")
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    flat = {}
    for key, leaf in traverse_util.flatten_dict(abstract).items():
        name = "/".join(key[1:])
        if name not in initializers:
            raise OnnxImportError(f"{path}: initializer {name!r} is missing")
        value = initializers[name]
        if value.ndim == 5:
            value = np.transpose(value, (2, 3, 4, 1, 0))
        if value.shape != leaf.shape:
            raise OnnxImportError(f"{path}: initializer {name!r} has shape {value.shape}, needs {leaf.shape}")
        flat[key] = value
    return arch, traverse_util.unflatten_dict(flat), labels
