"""Dense window features of whole datasets (`stres-jax features`): `extract` writes one `.npy` per
video, `open_features` reads them; windows by `WindowPlan`."""
from stres_jax.features.index import Features, open_features
from stres_jax.features.run import LAYERS, extract
from stres_jax.features.windows import WindowPlan

__all__ = ["Features", "LAYERS", "WindowPlan", "extract", "open_features"]
