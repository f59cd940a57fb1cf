"""The one cache folder: fetched checkpoints, compiled extensions, JAX's compilation cache."""
import os
from pathlib import Path


def cache_dir():
    """`$STRES_JAX_CACHE`, else `$XDG_CACHE_HOME/stres_jax` (default `~/.cache/stres_jax`)."""
    if os.environ.get("STRES_JAX_CACHE"):
        return Path(os.environ["STRES_JAX_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stres_jax"
