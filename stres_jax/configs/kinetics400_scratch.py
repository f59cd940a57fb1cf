"""Train r2plus1d_18 on Kinetics-400 from scratch with torchvision's reference recipe.

    python -m stres_jax.train --config configs/kinetics400_scratch.py --workdir /tmp/k400 \
        --config.data.root=/data/kinetics400/train

SGD momentum 0.9, weight decay 1e-4, lr 0.08 per 192 clips scaled linearly to batch_size,
45 epochs, 10 linear warm-up epochs from 0.001x, x0.1 at epochs 20, 30 and 40; 5 random clips
per video and epoch (16 frames at 15 fps, resize 128x171, random crop 112, random flip).
"""
from stres_jax.config.base import get_train_config


def get_config():
    config = get_train_config("r2plus1d_18")
    config.from_scratch = True
    config.num_epochs = 45
    config.batch_size = 192
    config.optimizer.learning_rate = 0.08  # for 8 GPUs x 24 clips = 192 clips
    config.optimizer.reference_batch = 192
    config.optimizer.warmup_epochs = 10.0
    config.optimizer.milestones = (20, 30, 40)
    config.checkpoint_every_steps = 1000
    return config
