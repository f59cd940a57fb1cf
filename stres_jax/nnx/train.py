"""Training an NNX net with torch's semantics, the NNX form of `stres_jax.train.make_train_step`:
`nnx.Optimizer(model, stres_jax.train.sgd(...), wrt=nnx.Param)` (torch.optim.SGD), mean
cross-entropy, BatchNorm in training mode (`model.train()`: PyTorch's unbiased running variance)."""
import jax.numpy as jnp
import optax
from flax import nnx


def loss_and_logits(model, clips, labels):
    """(mean cross-entropy, logits) of a batch; in training mode BatchNorm updates its statistics."""
    logits = model(clips)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


@nnx.jit
def train_step(model, optimizer, clips, labels):
    """One SGD step of `model` (in `model.train()` mode) on normalised `(B, T, H, W, 3)` clips;
    returns {"loss", "accuracy"}. The same step as the linen `make_train_step`."""
    (loss, logits), grads = nnx.value_and_grad(loss_and_logits, has_aux=True)(model, clips, labels)
    optimizer.update(model, grads)
    return {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
