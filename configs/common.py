"""The base every config starts from (kept in the package, so `stres-jax embed` can use it too)."""
from stres_jax.config_base import get_base_config  # noqa: F401
