"""Fine-tune the (2+1)D net (r2plus1d_18) from its Kinetics-400 checkpoint on a folder of videos.

    python -m stres_jax.train --config configs/finetune.py --workdir /tmp/finetune \
        --config.data.root=videos/

`videos/<class>/<video>`: the classes are the folder names, and a new head is made for them
unless they equal the checkpoint's labels. Every field and its default:
stres_jax/config/base.py (get_train_config); a misspelt key is an error.
"""
from stres_jax.config.base import get_train_config


def get_config():
    config = get_train_config("r2plus1d_18")
    config.num_epochs = 10
    config.batch_size = 8
    config.optimizer.learning_rate = 0.001
    config.optimizer.milestones = (6, 8)
    config.checkpoint_every_steps = 200
    return config
