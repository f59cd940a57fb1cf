"""Grad-CAM for the video nets: where and when the net looks for a class."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stres_jax.models.spec import STAGE_NAMES


def _last_block(model, layer):
    """The Flax name of the block whose output is `layer` ("stem" or "layer1".."layer4")."""
    if layer == "stem":
        return "stem"
    if layer not in STAGE_NAMES:
        raise ValueError(f"layer must be 'stem' or one of {', '.join(STAGE_NAMES)}, got {layer!r}")
    stage = STAGE_NAMES.index(layer) + 1
    return [block.name for block in model.spec.blocks() if block.stage == stage][-1]


def grad_cam(model, variables, clip, label=None, layer="layer4"):
    """Grad-CAM of one normalised clip `(T, 112, 112, 3)`: the ReLU of `layer`'s activation
    maps weighted by the mean gradient of the class logit (default: the top-1 class), divided
    by its maximum. Returns `(cam (T', H', W') float32, label index, probabilities (classes,))`.

    The gradient is taken with respect to the block's output itself (a zero added to it), as
    a hook on torchvision's `model.layer4` does."""
    block = _last_block(model, layer)
    clip = jnp.asarray(clip)[None]

    def run(variables, clip, delta):  # everything an argument: closed-over weights would be folded
        def add_delta(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name == block:
                return out + delta
            return out
        with nn.intercept_methods(add_delta):
            logits, features = model.apply(variables, clip, return_features=True)
        return logits[0], features[layer][0]

    logits, activation = jax.jit(run)(variables, clip, jnp.zeros((), clip.dtype))
    label = int(jnp.argmax(logits)) if label is None else int(label)
    gradient = jax.jit(jax.grad(lambda v, c, d: run(v, c, d)[0][label], argnums=2))
    grads = gradient(variables, clip, jnp.zeros((1,) + activation.shape, clip.dtype))[0]
    weights = grads.mean(axis=(0, 1, 2))
    cam = jax.nn.relu(jnp.einsum("thwc,c->thw", activation, weights))
    cam = cam / jnp.maximum(cam.max(), jnp.finfo(cam.dtype).tiny)
    return np.asarray(cam, np.float32), label, np.asarray(jax.nn.softmax(logits.astype(jnp.float32)))


def upsample_cam(cam, shape):
    """`cam` (T', H', W') resized to `shape` (T, H, W): nearest in time, bilinear in space."""
    time_index = np.minimum((np.arange(shape[0]) * cam.shape[0]) // shape[0], cam.shape[0] - 1)
    resized = jax.image.resize(jnp.asarray(cam[time_index]), (shape[0],) + tuple(shape[1:]), "linear")
    return np.clip(np.asarray(resized), 0, 1)
