"""stres_jax: torchvision's spatiotemporal ResNet-18 action-recognition nets in JAX/Flax."""
from stres_jax.checkpoints.store import load_checkpoint, save_checkpoint
from stres_jax.data.transforms import preprocess
from stres_jax.inference import forward_fn, jit_apply, jit_forward, load_model
from stres_jax.explain import grad_cam
from stres_jax.labels import kinetics400_labels
from stres_jax.models import create_model
from stres_jax.models.init import new_head, torchvision_init
from stres_jax.xla_options import compiler_options

__version__ = "0.1.0"
__all__ = ["compiler_options", "create_model", "forward_fn", "grad_cam", "jit_apply", "jit_forward", "kinetics400_labels",
           "load_checkpoint", "load_model", "new_head", "preprocess", "save_checkpoint", "torchvision_init"]
