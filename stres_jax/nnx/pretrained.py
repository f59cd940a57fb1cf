"""`from_pretrained` / `save_pretrained` for the NNX nets: every checkpoint the linen API reads
(an arch name for the `fetch` cache, a converted checkpoint directory, a Hub-layout folder,
`hf://owner/repo`), and the Hub-layout folder written by both APIs (`checkpoints.hub`)."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stres_jax.checkpoints.hub import preset_of, save_hub_folder
from stres_jax.checkpoints.store import load_checkpoint
from stres_jax.models.fold import fold_batchnorm as fold
from stres_jax.models.init import new_head
from stres_jax.nnx.modules import create_model


def variables_of(model):
    """The NNX model's weights as linen variables: {"params": ...[, "batch_stats": ...]} of numpy."""
    variables = {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param))}
    stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    if stats:
        variables["batch_stats"] = stats
    return jax.tree.map(np.asarray, variables)


def load_variables(model, variables):
    """Put linen variables (same names: the key table's, the checkpoints') into the NNX model."""
    for kind, collection in ((nnx.Param, "params"), (nnx.BatchStat, "batch_stats")):
        state = nnx.state(model, kind)
        if collection in variables or nnx.to_pure_dict(state):
            nnx.replace_by_pure_dict(state, jax.device_put(variables[collection]))  # one transfer, not one per array
            nnx.update(model, state)
    unfilled = [".".join(map(str, path)) for path, leaf in nnx.to_flat_state(nnx.state(model))
                if isinstance(leaf.get_value(), jax.ShapeDtypeStruct)]
    if unfilled:  # a model built by nnx.eval_shape whose weights the variables did not all give
        raise ValueError(f"no weights for {', '.join(unfilled[:3])}{' ...' if len(unfilled) > 3 else ''}")
    return model


def from_pretrained(name_or_path, *, num_classes=None, dtype=None, conv_impl="auto", fold_batchnorm=False):
    """The NNX net and weights of `name_or_path`, in eval mode: an arch name (the checkpoint
    `stres-jax fetch ARCH` cached), a checkpoint directory (`stres-jax convert`), a Hub-layout
    folder (`save_pretrained`) or `hf://owner/repo`. BatchNorm is kept (trainable) unless
    `fold_batchnorm=True` (faster inference); a folded folder gives a folded net. `num_classes`
    gives a new head, initialised as torch's nn.Linear; `dtype=jnp.float64` (with x64 enabled)
    a float64 net. The labels are `model.labels`."""
    _, variables, meta = load_checkpoint(name_or_path)
    folded = "batch_stats" not in variables
    if num_classes is not None and num_classes != meta["num_classes"]:
        variables = new_head(variables, num_classes)
        meta = {**meta, "num_classes": num_classes, "labels": [f"class_{i}" for i in range(num_classes)]}
    model = nnx.eval_shape(lambda: create_model(meta["arch"], meta["num_classes"], conv_impl, dtype or jnp.float32,
                                                fold_batchnorm=folded or fold_batchnorm))  # shapes only: no random init
    if fold_batchnorm and not folded:
        variables = fold(variables, model.spec)
    if dtype is not None:
        variables = jax.tree.map(lambda a: np.asarray(a, dtype), variables)
    load_variables(model, variables)
    model.labels = tuple(meta["labels"])
    model.preset = preset_of(meta)
    return model


def save_pretrained(model, directory, labels=None, overwrite=False):
    """Write the NNX net to `directory` in the Hub layout (config.json + model.safetensors, names
    in `checkpoints.hub`); `labels` default to the model's own (`from_pretrained`'s) or class_i."""
    labels = labels or getattr(model, "labels", None) or [f"class_{i}" for i in range(model.num_classes)]
    if model.arch is None:
        raise ValueError("save_pretrained writes nets of a named arch (create_model or from_pretrained)")
    return save_hub_folder(directory, model.arch, variables_of(model), list(labels), model.options.fold_batchnorm, overwrite,
                           preset=model.preset)
