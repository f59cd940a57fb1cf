"""Linear probe on frozen video embeddings, and a closed-form ridge baseline.

    python experiments/linear_probe.py --train train.npz --test test.npz
    python experiments/linear_probe.py --config configs/ucf101_probe.py --config.checkpoint=DIR

The probe is softmax regression trained with optax (full-batch by default), its weight decay
chosen on a validation split of the training set. The last line printed contains `top1`.
"""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags
from sklearn.model_selection import train_test_split

from stres_jax.checkpoints.store import read_meta
from stres_jax.config.program import fail, flags_parser, user_errors
from stres_jax.data.sources import tfds_source
from stres_jax.embed import embed, load_npz, save_npz
from stres_jax.errors import UserError

PROG = "linear_probe.py"
WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


def load_embeddings(path):
    data = load_npz(path)
    if "labels" not in data:
        raise UserError(f"{path}: has no `labels` array; embed a folder of <class>/<video> folders")
    return data["embeddings"].astype(np.float32), data["labels"]


def topk_accuracy(scores, targets, k):
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(targets, top)]))


def train_softmax(x, y, num_classes, weight_decay, steps=300, learning_rate=0.05, batch_size=0, seed=0):
    """(W, b) of softmax regression with an L2 penalty, trained with Adam."""
    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    optimizer = optax.adam(learning_rate)

    def loss(p, xb, yb):
        logits = xb @ p["w"] + p["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean() + weight_decay * jnp.sum(p["w"] ** 2)

    @jax.jit
    def step(p, state, xb, yb):
        grads = jax.grad(loss)(p, xb, yb)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    state, rng = optimizer.init(params), np.random.default_rng(seed)
    for _ in range(steps):
        index = rng.choice(len(x), batch_size, replace=False) if 0 < batch_size < len(x) else slice(None)
        params, state = step(params, state, x[index], y[index])
    return np.asarray(params["w"]), np.asarray(params["b"])


def ridge(x, y, num_classes, alpha=1.0):
    """Closed-form ridge regression onto one-hot targets (centred, so the bias is exact)."""
    mean_x, targets = x.mean(0), np.eye(num_classes)[y]
    mean_t, xc = targets.mean(0), x - x.mean(0)
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (targets - mean_t))
    return w, mean_t - mean_x @ w


def probe(train, test, steps=300, batch_size=0, log=print):
    """{"probe": {...}, "ridge": {...}} with top1/top5 on the test set."""
    (x_train, labels_train), (x_test, labels_test) = train, test
    classes = sorted(set(labels_train.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[c] for c in labels_train])
    y_test = np.array([index.get(c, -1) for c in labels_test])  # unseen classes never count as hits
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    counts = np.bincount(y_train)
    stratify = y_train if counts.min() >= 2 and len(classes) <= 0.2 * len(y_train) else None
    fit, val = train_test_split(np.arange(len(y_train)), test_size=0.2, random_state=0, stratify=stratify)
    scores = {}
    for wd in WEIGHT_DECAYS:
        w, b = train_softmax(x_train[fit], y_train[fit], len(classes), wd, steps, batch_size=batch_size)
        scores[wd] = topk_accuracy(x_train[val] @ w + b, y_train[val], 1)
        log(f"weight decay {wd:g}: validation top1 {scores[wd]:.4f}")
    best = max(WEIGHT_DECAYS, key=lambda wd: (scores[wd], wd))
    w, b = train_softmax(x_train, y_train, len(classes), best, steps, batch_size=batch_size)
    rw, rb = ridge(x_train, y_train, len(classes))
    ks = (1, 5) if len(classes) > 5 else (1,)  # top-5 of 5 or fewer classes says nothing

    def accuracies(logits):
        return {f"top{k}": topk_accuracy(logits, y_test, k) for k in ks}
    return {"probe": {"weight_decay": best, **accuracies(x_test @ w + b)}, "ridge": accuracies(x_test @ rw + rb)}


def report(results):
    def scores(entry):
        return "  ".join(f"{key} {value:.4f}" for key, value in entry.items() if key.startswith("top"))
    print(f"ridge (closed form): {scores(results['ridge'])}")
    print(f"linear probe (weight decay {results['probe']['weight_decay']:g}): {scores(results['probe'])}")


def embed_split(config, split):
    """(embeddings, labels) of one TFDS split, saved as <workdir>/<split>.npz when there is one."""
    items = tfds_source(config.tfds_name, split, [], config.fps)
    if config.max_videos:
        items = items[: config.max_videos]
    workdir = Path(config.workdir) / split if config.workdir else None
    arrays, skipped = embed(items, config.embedding, workdir)
    if config.workdir:
        save_npz(arrays, Path(config.workdir) / f"{split}.npz")
    print(f"{split}: {len(arrays['paths'])} videos embedded, {len(skipped)} skipped")
    return arrays["embeddings"], arrays["labels"]


def run_pipeline(config):
    """{"probe": ..., "ridge": ...} for a config like configs/ucf101_probe.py."""
    config.embedding.checkpoint = config.checkpoint
    if config.checkpoint:  # the checkpoint names its net; embedding.arch chooses the cached one
        config.embedding.arch = read_meta(config.checkpoint)["arch"]
    train = embed_split(config, config.train_split)
    test = embed_split(config, config.test_split)
    return probe(train, test, config.steps, config.probe_batch_size)


def define_flags():
    flags.DEFINE_string("train", None, "embeddings .npz of the training set")
    flags.DEFINE_string("test", None, "embeddings .npz of the test set")
    flags.DEFINE_integer("steps", 300, "optimisation steps")
    flags.DEFINE_integer("batch_size", 0, "minibatch size (0: full batch)")
    config_flags.DEFINE_config_file("config", None, "an end-to-end probe config", lock_config=True)


def main(argv):
    del argv
    args = flags.FLAGS
    with user_errors(PROG):
        if args.config is not None:
            report(run_pipeline(args.config))
        elif args.train and args.test:
            report(probe(load_embeddings(args.train), load_embeddings(args.test), args.steps, args.batch_size))
        else:
            fail(PROG, "pass --train A.npz --test B.npz, or --config configs/ucf101_probe.py")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=flags_parser(PROG))
