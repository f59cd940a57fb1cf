"""The configs shipped with the package: `--config r2plus1d` (or a path) in `stres-jax eval/train`.

Each file's docstring shows the command that runs it; `stres_jax.config.named` resolves the names.
"""
