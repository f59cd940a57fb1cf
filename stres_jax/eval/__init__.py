"""Evaluation by torchvision's protocol (`python -m stres_jax.eval`): `evaluate` (the run),
`metrics` (top-k, accuracies) and `records` (resumable per-video records).

`evaluate` is imported on first use: `metrics` sits below the inference core, which `run` uses."""


def __getattr__(name):
    if name == "evaluate":
        from stres_jax.eval.run import evaluate
        return evaluate
    raise AttributeError(f"module 'stres_jax.eval' has no attribute {name!r}")
