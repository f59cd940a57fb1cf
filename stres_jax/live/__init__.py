"""Live recognition: `recognize(sources, runner)` yields a result per window as streams play
(`stres-jax live`)."""
from stres_jax.live.loop import LiveOptions, recognize
from stres_jax.live.sources import Source

__all__ = ["LiveOptions", "Source", "recognize"]
