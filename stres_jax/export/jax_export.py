"""`jax.export` artefacts of a net: StableHLO that `jax.export.deserialize(...).call(clips)` runs
with nothing of this package installed (a JAX serving stack, another project).

The artefact takes normalised `(batch, frames, height, width, 3)` float32 clips (NTHWC, the
batch dimension symbolic) and returns float32 logits. BatchNorm is folded and the weights are
constants inside it. Each platform gets the lowering that is fastest there and needs no custom
call: the 2-D tap convolutions on CPU, XLA's own convolutions on CUDA (`lax.platform_dependent`).
"""
import json

import jax
import jax.numpy as jnp

from stres_jax.models import create_model
from stres_jax.models.fold import fold_batchnorm

PLATFORMS = ("cpu", "cuda")
LOWERING = {"cpu": "taps", "cuda": "xla", "rocm": "xla", "tpu": "xla"}


def export_net(net, frames=None, size=None, platforms=PLATFORMS):
    """The `jax.export.Exported` of a `loader.LoadedNet` (BatchNorm kept or folded alike);
    `frames` and `size` default to the net's preset (clip length and crop)."""
    spec = net.model.spec
    frames, size = frames or net.preset.clip_len, size or net.preset.crop
    variables = net.variables if "batch_stats" not in net.variables else fold_batchnorm(net.variables, spec)
    dtype = jnp.dtype(net.options.dtype)
    models = {p: create_model(net.arch, num_classes=len(net.labels), conv_impl=LOWERING[p],
                              fold_batchnorm=True, dtype=dtype) for p in platforms}

    def branch(model):
        return lambda params, clips: model.apply(params, clips).astype(jnp.float32)

    def logits(clips):
        params = jax.tree.map(jnp.asarray, variables)
        if len(platforms) == 1:
            return branch(models[platforms[0]])(params, clips)
        return jax.lax.platform_dependent(params, clips, **{p: branch(m) for p, m in models.items()})

    (batch,) = jax.export.symbolic_shape("batch")
    clips = jax.ShapeDtypeStruct((batch, frames, size, size, 3), jnp.float32)
    return jax.export.export(jax.jit(logits), platforms=tuple(platforms))(clips)


def describe(net, exported, frames, size):
    """The sidecar JSON written beside an artefact: what goes in and what comes out."""
    return json.dumps({"arch": net.arch, "labels": list(net.labels), "platforms": list(exported.platforms),
                       "input": {"shape": ["batch", frames, size, size, 3], "dtype": "float32",
                                 "layout": "NTHWC", "preprocessing": net.preset.preprocessing(),
                                 "preset": net.preset.to_json()},
                       "output": {"shape": ["batch", len(net.labels)], "dtype": "float32", "meaning": "logits"},
                       "compute_dtype": net.options.dtype, "library": "stres_jax",
                       "load": "jax.export.deserialize(open(FILE, 'rb').read()).call(clips)"}, indent=1)
