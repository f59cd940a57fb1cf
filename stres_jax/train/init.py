"""Starting weights: torchvision's initialisation for training from scratch, and a new head."""
from stres_jax.models.init import new_head, torchvision_init

__all__ = ["torchvision_init", "new_head", "trainable_filter"]


def trainable_filter(frozen_stages):
    """`path -> bool` freezing the stem and the first `frozen_stages` stages (0: train all)."""
    frozen = ("stem",) + tuple(f"layer{stage}_" for stage in range(1, frozen_stages + 1))

    def trainable(path):
        top = str(getattr(path[0], "key", path[0]))
        return not top.startswith(frozen)
    return None if frozen_stages <= 0 else trainable
