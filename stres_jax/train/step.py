"""One training step with torch's semantics: SGD as `torch.optim.SGD`, cross-entropy, BatchNorm
in training mode (`models.norm.TorchBatchNorm`). Nothing here fixes a dtype: with
`jax_enable_x64` and `model.clone(dtype=jnp.float64)` and float64 variables it runs in float64."""
import jax
import jax.numpy as jnp
import optax


def sgd(learning_rate, momentum=0.9, weight_decay=1e-4, clip_grad_norm=0.0):
    """`torch.optim.SGD(lr, momentum, weight_decay)`: the decay is added to the gradient before
    momentum, and the first momentum buffer is the gradient itself. `learning_rate` may be an
    optax schedule; the rate of each step is kept in `opt_state.hyperparams["learning_rate"]`.
    `clip_grad_norm` > 0: the gradients first clipped as `torch.nn.utils.clip_grad_norm_`
    (mmaction2's `clip_grad=dict(max_norm=40)`)."""
    def make(learning_rate):
        clip = [clip_by_torch_norm(clip_grad_norm)] if clip_grad_norm else []
        return optax.chain(*clip, optax.add_decayed_weights(weight_decay),
                           optax.sgd(learning_rate, momentum=momentum or None))
    return optax.inject_hyperparams(make)(learning_rate=learning_rate)


def clip_by_torch_norm(max_norm):
    """`clip_grad_norm_(max_norm)`: every gradient times min(1, max_norm / (norm + 1e-6)), the
    norm taken over the per-tensor norms (optax's `clip_by_global_norm` has no 1e-6)."""
    def update(updates, state, params=None):
        del params
        norms = jnp.stack([jnp.linalg.norm(g.ravel()) for g in jax.tree.leaves(updates)])
        total = jnp.linalg.norm(norms)
        coefficient = jnp.minimum(max_norm / (total + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * coefficient.astype(g.dtype), updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def init_state(model, variables, optimizer):
    """The training state: `params`, `batch_stats`, `opt_state` and `step` (a pytree)."""
    del model  # the state does not depend on it; kept for a stable signature
    params = variables["params"]
    return {"params": params, "batch_stats": variables["batch_stats"],
            "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def current_learning_rate(opt_state):
    """The learning rate of the last step (0 before the first), if the optimizer records one."""
    hyperparams = getattr(opt_state, "hyperparams", None) or {}
    return hyperparams.get("learning_rate", jnp.nan)


def frozen_norm_trainable(model, trainable=None):
    """`trainable` with every BatchNorm's scale and bias frozen too (mmaction2's `bn_frozen`)."""
    norms = set(model.spec.conv_before_norm())

    def keep(path):
        names = tuple(getattr(key, "key", key) for key in path)
        return names[:-1] not in norms and (trainable is None or trainable(path))
    return keep


def make_train_step(model, optimizer, trainable=None, frozen_bn=False):
    """`(state, clips, labels) -> (state, metrics)`, to be jitted. `clips` are normalised
    `(B, T, H, W, 3)`, `labels` `(B,)` int; `metrics` holds the mean cross-entropy `loss`,
    `accuracy` (top-1 over the batch) and `learning_rate`. `trainable(path) -> bool`, if
    given, freezes the other parameters (their gradient is zeroed before the optimizer).
    `frozen_bn`: BatchNorm normalises by its running statistics, which stay as they are, and
    its scale and bias are frozen (mmaction2's `norm_eval=True, bn_frozen=True`, as its CSN
    fine-tuning configs set)."""
    if frozen_bn:
        trainable = frozen_norm_trainable(model, trainable)

    def loss_fn(params, batch_stats, clips, labels):
        if frozen_bn:
            logits = model.apply({"params": params, "batch_stats": batch_stats}, clips, train=False)
            updated = {"batch_stats": batch_stats}
        else:
            logits, updated = model.apply({"params": params, "batch_stats": batch_stats}, clips,
                                          train=True, mutable=["batch_stats"])
        logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updated["batch_stats"])

    def step(state, clips, labels):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (logits, batch_stats)), grads = grad_fn(state["params"], state["batch_stats"], clips, labels)
        if trainable is not None:
            grads = jax.tree_util.tree_map_with_path(
                lambda path, g: g if trainable(path) else jnp.zeros_like(g), grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        if trainable is not None:  # weight decay must not move frozen weights either
            params = jax.tree_util.tree_map_with_path(
                lambda path, new, old: new if trainable(path) else old, params, state["params"])
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
                   "learning_rate": current_learning_rate(opt_state)}
        return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state,
                "step": state["step"] + 1}, metrics
    return step
