"""stres_jax: torchvision's spatiotemporal ResNet-18 action-recognition nets in JAX/Flax."""
from stres_jax.checkpoints.store import kinetics400_labels, load_checkpoint, save_checkpoint
from stres_jax.data.transforms import preprocess
from stres_jax.models import create_model
from stres_jax.xla_options import compiler_options

__version__ = "0.1.0"
__all__ = ["compiler_options", "create_model", "kinetics400_labels", "load_checkpoint", "preprocess", "save_checkpoint"]
