"""Starting weights: torchvision's initialisation of VideoResNet, in numpy from the variables' shapes (no
compile: `jax.jit(model.init)` took 28 s on this CPU, this about 1 s), and a
new head for a pretrained backbone."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util


def abstract_variables(model):
    """The model's variable tree as shapes only (nothing is computed; any clip size gives the same shapes)."""
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 112, 112, 3), jnp.float32))


def torchvision_init(model, seed=0):
    """Variables as torchvision's VideoResNet initialises them: convs kaiming-normal (fan_out,
    ReLU), BatchNorm weight 1 / bias 0, fc normal(0, 0.01) with bias 0; running stats 0 / 1."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(abstract_variables(model))
    values = {}
    for path, leaf in flat.items():
        shape, name = leaf.shape, path[-1]
        if name == "kernel" and len(shape) == 5:  # (t, h, w, in, out): fan_out = out * t * h * w
            std = np.sqrt(2.0 / (shape[-1] * np.prod(shape[:3])))
            values[path] = rng.standard_normal(shape, np.float32) * np.float32(std)
        elif name == "kernel":
            values[path] = rng.standard_normal(shape, np.float32) * np.float32(0.01)
        elif name in ("scale", "var"):
            values[path] = np.ones(shape, np.float32)
        else:
            values[path] = np.zeros(shape, np.float32)
    return jax.tree.map(lambda a: np.asarray(a, np.float32), traverse_util.unflatten_dict(values))


def new_head(variables, num_classes, seed=0):
    """`variables` with an `fc` of `num_classes` outputs, initialised as torch's nn.Linear
    (uniform in +-1/sqrt(fan_in) for weight and bias)."""
    fan_in = variables["params"]["fc"]["kernel"].shape[0]
    bound = 1.0 / np.sqrt(fan_in)
    rng = np.random.default_rng(seed)
    fc = {"kernel": rng.uniform(-bound, bound, (fan_in, num_classes)).astype(np.float32),
          "bias": rng.uniform(-bound, bound, (num_classes,)).astype(np.float32)}
    return {**variables, "params": {**variables["params"], "fc": fc}}
