"""Kinetics-400 video-level evaluation of the Mixed net (mc3_18), torchvision's protocol.

    python -m stres_jax.eval --config configs/mc3.py --workdir /tmp/eval-mc3 \
        --config.data.root=/data/kinetics400/val

Add --config.batch_size=32 and the like to override; a misspelt key is an error. Every field
and its default: stres_jax/config/base.py.
"""
from stres_jax.config.base import get_base_config


def get_config():
    return get_base_config("mc3_18")
