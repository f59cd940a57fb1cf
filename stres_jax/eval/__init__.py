"""Evaluation by torchvision's protocol (`python -m stres_jax.eval`): `evaluate` (the run),
`metrics` (accuracies), `records` (resumable per-video records) and `program` (the absl entry).

`evaluate` is imported on first use: `records` serves features and embed without the run."""


def __getattr__(name):
    if name == "evaluate":
        from stres_jax.eval.run import evaluate
        return evaluate
    raise AttributeError(f"module 'stres_jax.eval' has no attribute {name!r}")
