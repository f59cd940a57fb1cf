"""stres_jax: torchvision's spatiotemporal ResNet-18 action-recognition nets in JAX/Flax.

The names below are imported on first use, so `import stres_jax.data.decode` (as the decoding
worker processes do) does not pay for jax and flax."""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ClipRunner": "stres_jax.inference", "predict_video": "stres_jax.predict",
    "compiler_options": "stres_jax.runtime.xla_options", "create_model": "stres_jax.models",
    "forward_fn": "stres_jax.inference", "grad_cam": "stres_jax.explain", "jit_apply": "stres_jax.inference",
    "jit_forward": "stres_jax.inference", "kinetics400_labels": "stres_jax.labels",
    "load_checkpoint": "stres_jax.checkpoints.store", "load_net": "stres_jax.loader",
    "ModelOptions": "stres_jax.loader",
    "new_head": "stres_jax.models.init", "preprocess": "stres_jax.data.transforms",
    "save_checkpoint": "stres_jax.checkpoints.store", "save_pretrained": "stres_jax.checkpoints.hub", "torchvision_init": "stres_jax.models.init",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stres_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
