"""Kinetics-400 video-level evaluation of ir-CSN-152 by mmaction2's test protocol (its preset:
10 clips of 32 frames, every 2nd native frame, each in three 256x256 crops of the short side
resized to 256), with the checkpoint `stres-jax fetch ir_csn_152` caches.

    python -m stres_jax.eval --config configs/ircsn.py --workdir /tmp/eval-ircsn \
        --config.data.root=/data/kinetics400/val

--config.checkpoint=ir_csn_152_sports1m_kinetics_bnfrozen (or a folder) for another of mmaction2's
CSN nets, --config.arch=ip_csn_152 for the ip ones. Every field and its default: stres_jax/config/base.py.
"""
from stres_jax.config.base import get_base_config


def get_config():
    config = get_base_config("ir_csn_152")
    config.batch_size = 2  # clips of 32x256x256: a small batch keeps the activations small
    return config
