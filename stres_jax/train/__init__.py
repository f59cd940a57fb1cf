"""Training and fine-tuning with torchvision's semantics (`python -m stres_jax.train`).

The library API: `sgd` (torch.optim.SGD), `init_state`, `make_train_step`; the nets'
BatchNorm is `stres_jax.models.TorchBatchNorm` (PyTorch's running-variance rule).
"""
from stres_jax.models.norm import TorchBatchNorm
from stres_jax.train.step import current_learning_rate, init_state, make_train_step, sgd

__all__ = ["TorchBatchNorm", "current_learning_rate", "init_state", "make_train_step", "sgd"]
