"""Training an NNX net with torch's semantics, the NNX form of `stres_jax.train.make_train_step`:
`nnx.Optimizer(model, stres_jax.train.sgd(...), wrt=nnx.Param)` (torch.optim.SGD), mean
cross-entropy, BatchNorm in training mode (`model.train()`: PyTorch's unbiased running variance).

The step is `jax.jit` over the split state with the project's CPU compiler options
(`stres_jax.compiler_options()`; `nnx.jit` takes none, and jaxlib's defaults made a training step
3-4x slower on the CPU, BENCHMARKS.md), and the model and optimizer are updated in place."""
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from stres_jax.runtime.xla_options import compiler_options


def loss_and_logits(model, clips, labels):
    """(mean cross-entropy, logits) of a batch; in training mode BatchNorm updates its statistics."""
    logits = model(clips)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


def _step(graphdef, state, clips, labels):
    model, optimizer = nnx.merge(graphdef, state)
    (loss, logits), grads = nnx.value_and_grad(loss_and_logits, has_aux=True)(model, clips, labels)
    optimizer.update(model, grads)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return nnx.state((model, optimizer)), metrics


@functools.cache
def _jitted_step():
    return jax.jit(_step, static_argnums=0, donate_argnums=1, compiler_options=compiler_options())


def train_step(model, optimizer, clips, labels):
    """One SGD step of `model` (in `model.train()` mode) on normalised `(B, T, H, W, 3)` clips,
    updating `model` and `optimizer` in place; returns {"loss", "accuracy"}. The same step as the
    linen `make_train_step`."""
    graphdef, state = nnx.split((model, optimizer))
    state, metrics = _jitted_step()(graphdef, state, clips, labels)
    nnx.update((model, optimizer), state)
    return metrics
