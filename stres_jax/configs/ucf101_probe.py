"""UCF-101 split-1 linear probe on frozen (2+1)D embeddings, end to end through TFDS.

    python experiments/linear_probe.py --config configs/ucf101_probe.py \
        --config.workdir=/tmp/ucf101-probe

TFDS's `ucf101` (builder config ucf101_1_256) is split 1 of the standard three; TFDS
downloads and prepares it on first use. The embeddings use torchvision's protocol.
"""
import ml_collections

from stres_jax.config.base import get_base_config


def get_config():
    config = ml_collections.ConfigDict()
    config.checkpoint = ""          # checkpoint directory ("" = the cached `stres-jax fetch` one)
    config.workdir = ""             # keeps train.npz, test.npz and resumable per-video results
    config.tfds_name = "ucf101/ucf101_1_256"
    config.train_split = "train"
    config.test_split = "test"
    config.fps = 25.0               # UCF-101's frame rate
    config.max_videos = 0           # per split; 0 = all
    config.steps = 300
    config.probe_batch_size = 0     # 0 = full batch
    config.embedding = get_base_config("r2plus1d_18")
    return config
