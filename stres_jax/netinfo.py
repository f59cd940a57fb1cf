"""Net information: array sizes, layer types, multiply-accumulates, kernel shapes of every block."""
import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from stres_jax.data.transforms import clip_shape
from stres_jax.models.preset import Preset
from stres_jax.models import TorchBatchNorm
from stres_jax.models.init import abstract_variables


def _trace_layers(model):
    """[(module path, module type, input shape, output shape, kernel size)] in call order."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.BatchNorm, TorchBatchNorm, nn.Dense)):
            kernel = tuple(module.kernel_size) if isinstance(module, nn.Conv) else None
            kind = "BatchNorm" if isinstance(module, TorchBatchNorm) else type(module).__name__
            groups = module.feature_group_count if isinstance(module, nn.Conv) else 1
            calls.append(("/".join(module.path), kind, args[0].shape, out.shape, kernel, groups))
        return out

    variables = abstract_variables(model)

    def forward(v, x):
        with nn.intercept_methods(interceptor):
            return model.apply(v, x)
    jaxpr = jax.make_jaxpr(forward)(variables, jnp.zeros(clip_shape(model.clip_len, batch=1, crop=model.preset.crop), jnp.float32))
    return calls, variables, jaxpr


def _count_primitives(jaxpr, counts=None):
    counts = collections.Counter() if counts is None else counts
    for eqn in jaxpr.eqns:
        counts[eqn.primitive.name] += 1
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                _count_primitives(inner, counts)
    return counts


def _macs(kind, in_shape, out_shape, kernel, groups=1):
    if kind == "Conv":
        return int(np.prod(out_shape[1:])) * int(np.prod(kernel)) * in_shape[-1] // groups
    if kind == "Dense":
        return in_shape[-1] * out_shape[-1]
    return 0


def net_information(model, arch=None):
    """A JSON-ready dict: arrays, totals, layer types, GMACs per clip of the net's length (16, or the
    IG-65M nets' 8 or 32) at 112x112, kernel sizes."""
    from stres_jax.models.conv_impls import conv_factory
    # The net as defined, whatever lowering or folding `model` runs with.
    calls, variables, jaxpr = _trace_layers(model.clone(conv=conv_factory("xla"), fold_batchnorm=False))
    arrays = {"/".join(path): int(np.prod(leaf.shape)) for path, leaf in
              traverse_util.flatten_dict(variables["params"]).items()}
    stats = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get("batch_stats", {})))
    kinds = collections.Counter(kind for _, kind, _, _, _, _ in calls)
    primitives = _count_primitives(jaxpr.jaxpr)
    layer_types = {"convolution": kinds["Conv"], "batch_norm": kinds["BatchNorm"],
                   "relu": primitives["max"], "dense": kinds["Dense"],
                   "residual_add": len(model.spec.blocks()),
                   "global_average_pool": 1,
                   **({"max_pool": primitives["reduce_window_max"]} if primitives["reduce_window_max"] else {})}
    kernel_sizes = collections.defaultdict(list)
    layers = []
    for path, kind, in_shape, out_shape, kernel, _ in calls:
        if kernel:
            kernel_sizes[path.split("/")[0]].append(list(kernel))
        layers.append({"path": path, "type": kind, "output": list(out_shape[1:]),
                       **({"kernel": list(kernel)} if kernel else {})})
    total = sum(arrays.values())
    return {"arch": arch or type(model).__name__,
            "input": list(clip_shape(model.clip_len, crop=model.preset.crop)), "preset": model.preset.to_json(),
            "total_params": total, "trainable_params": total,
            "batch_norm_statistics": stats, "layer_types": layer_types,
            "gmacs": round(sum(_macs(k, i, o, kern, g) for _, k, i, o, kern, g in calls) / 1e9, 3),
            "kernel_sizes": dict(kernel_sizes), "arrays": arrays, "layers": layers}


def format_information(info):
    """Readable tables of `net_information`'s dict."""
    lines = [f"{info['arch']}: {info['total_params']:,} parameters (all trainable), "
             f"{info['batch_norm_statistics']:,} batch-norm statistics, "
             f"{info['gmacs']} GMACs per {'x'.join(map(str, info['input'][:3]))} clip",
             f"preset: {Preset.from_json(info['preset'], 'info').summary()}", "",
             "layer types:"]
    lines += [f"  {name:20s} {count}" for name, count in info["layer_types"].items()]
    lines += ["", "kernel sizes [time, height, width] of each block's convolutions:"]
    for block, kernels in info["kernel_sizes"].items():
        lines.append(f"  {block:10s} " + "  ".join("x".join(map(str, k)) for k in kernels))
    lines += ["", "arrays:"]
    width = max(len(name) for name in info["arrays"])
    lines += [f"  {name:{width}s} {count:>10,}" for name, count in info["arrays"].items()]
    return "\n".join(lines)


def speed_report():
    """What runs the nets here: backend, CPU instructions, the conv lowering "auto" picks and why."""
    import os

    import stres_jax.models.onednn as onednn
    from stres_jax.models.conv_impls import resolve_conv_impl
    from stres_jax.runtime.xla_options import DEFAULT_CPU_LIBRARY
    flags = onednn.cpu_flags()
    available, why = onednn.status()
    bf16 = ("oneDNN forward, tap gradients (this CPU has bf16 instructions)" if onednn.runs_dtype(jnp.bfloat16)
            else "taps (no oneDNN, or no bf16 instructions on this CPU)")
    return {"backend": f"{jax.default_backend()} ({jax.device_count()} devices)",
            "cpu": ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "unknown",
            "conv lowering": resolve_conv_impl("auto") + ' (conv_impl="auto")',
            "oneDNN": why if available else f"not used: {why}",
            "float32 gradients": ({"all": "oneDNN for every kernel (AVX-512)",
                                   "spacetime": "oneDNN for 3x3x3 and 3x7x7 kernels, taps for the rest"}
                                  [onednn.gradient_rule()] if available else "taps"),
            "float64": "taps (oneDNN runs float32 and bfloat16 only)",
            "depthwise convs": ("XLA's grouped convolution (conv_impl 'xla')" if resolve_conv_impl("auto") == "xla" else
                                "one C++ pass each (native/depthwise.cc): the forward with a folded BN's bias and "
                                "ReLU (bfloat16 too, summed in float32), and the kernel gradient; the input gradient as 27 "
                                "taps fused by XLA"
                                if available else "taps: 27 shifted multiply-adds fused by XLA (the CSN nets' conv2)"),
            "residual blocks": ("BN folded: the shortcut summed into the last conv's output by oneDNN (sum post-op); "
                                "otherwise each output materialised by a custom-call copy (XLA would rebuild earlier "
                                "blocks inside later fusions)" if available else "left to XLA's fusion"),
            "bfloat16": bf16,
            "cpu kernels": f"{DEFAULT_CPU_LIBRARY} (stres_jax.compiler_options(): XLA's kernels, YNNPACK's reductions)",
            "threads": f"{os.cpu_count()} cores; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"}


def model_for(target):
    """(model, arch) for an arch name or a checkpoint directory."""
    from pathlib import Path

    from stres_jax.checkpoints.store import read_meta
    from stres_jax.errors import UserError
    from stres_jax.models import ARCH_SPECS, canonical_arch, create_model
    if Path(target).exists() or str(target).startswith("hf://"):
        meta = read_meta(target)
        return create_model(meta["arch"], num_classes=meta["num_classes"]), meta["arch"]
    try:
        arch = canonical_arch(target)
    except ValueError:
        raise UserError(f"{target}: no such checkpoint directory, and not an arch name "
                        f"({', '.join(ARCH_SPECS)}, 3D, Mixed or (2+1)D)") from None
    return create_model(arch), arch
