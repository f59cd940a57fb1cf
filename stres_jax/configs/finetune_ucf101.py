"""Fine-tune the (2+1)D net from its Kinetics-400 checkpoint on UCF-101 split 1, read from TFDS
at native resolution (`ucf101/ucf101_1`, not the default 256x256 `ucf101_1_256`).

    stres-jax fetch r2plus1d_18    # once: the Kinetics-400 weights this starts from
    python -m stres_jax.train --config configs/finetune_ucf101.py --workdir /tmp/ucf101

Needs `pip install "stres-jax[tfds]"` (in a clone: `pip install -e ".[tfds]"`). On first use TFDS downloads UCF-101 and prepares it as
array_record (training reads examples in random order); a copy already prepared as tfrecord
is refused with the command that converts it. The 101 classes get a new head; split 1's test
videos are validated after each epoch with the eval protocol.
"""
from stres_jax.config.base import get_train_config


def get_config():
    config = get_train_config("r2plus1d_18")
    for data, split in ((config.data, "train"), (config.validation.data, "test")):
        data.source, data.tfds_name, data.split, data.tfds_fps = "tfds", "ucf101/ucf101_1", split, 25.0
    config.num_epochs = 10
    config.batch_size = 24
    config.optimizer.learning_rate = 0.001
    config.optimizer.milestones = (6, 8)
    config.checkpoint_every_steps = 500
    return config
