"""Kinetics-400 video-level evaluation of the IG-65M R(2+1)D-34 fine-tuned on Kinetics, 32-frame clips
(r2plus1d_34_32_kinetics, ig65m-pytorch's weights): the preset and protocol of the 18-layer nets
(15 fps, 128x171, centre crop 112), 5 clips of the checkpoint's 32 frames.

    stres-jax fetch r2plus1d_34_32_kinetics
    python -m stres_jax.eval --config configs/r2plus1d_34.py --workdir /tmp/eval-r2plus1d-34 \
        --config.data.root=/data/kinetics400/val

32-frame clips hold twice the activations of 16: --config.batch_size=4 where 8 runs out of memory.
Every field and its default: stres_jax/config/base.py.
"""
from stres_jax.config.base import get_base_config


def get_config():
    return get_base_config("r2plus1d_34_32_kinetics")
