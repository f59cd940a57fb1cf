"""The nets as Flax NNX modules (`create_model`, `from_pretrained`, `save_pretrained`), from the
same architecture rows, with the same weights, lowerings and training semantics as the linen ones."""
from stres_jax.nnx.modules import (BasicBlock, BasicStem, BatchNorm, Conv, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple,
                                   Options, R2Plus1dStem, Rows, VideoResNet, create_model)
from stres_jax.nnx.pretrained import from_pretrained, load_variables, save_pretrained, variables_of
from stres_jax.nnx.train import loss_and_logits, train_step

__all__ = ["BasicBlock", "BasicStem", "BatchNorm", "Conv", "Conv2Plus1D", "Conv3DNoTemporal", "Conv3DSimple", "Options",
           "R2Plus1dStem", "Rows", "VideoResNet", "create_model", "from_pretrained", "load_variables",
           "save_pretrained", "loss_and_logits", "train_step", "variables_of"]
