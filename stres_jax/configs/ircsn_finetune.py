"""Fine-tune ir-CSN-152 (`stres-jax fetch ir_csn_152`) on a folder of videos as mmaction2's CSN
configs train it (`ircsn_ig65m-pretrained-r152-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb.py`):
BN frozen (`norm_eval`, `bn_frozen`), its train pipeline (32 frames, every 2nd native frame, a
random resized crop of the short side resized to 256, then 224x224, flipped half the time), SGD at
5e-4 for 96 clips (scaled to the batch), momentum 0.9, weight decay 1e-4, gradients clipped at
norm 40, a warm-up from 0.1x over 16 of 58 epochs and x0.1 at epochs 32 and 48.

    python -m stres_jax.train --config configs/ircsn_finetune.py --workdir /tmp/finetune-ircsn \
        --config.data.root=videos/

`videos/<class>/<video>`; --config.checkpoint=ir_csn_152_sports1m_kinetics_bnfrozen (or a folder)
starts from another CSN net, whose preset (mean and std) the clips then follow. Unlike mmaction2,
whose LinearLR steps once per epoch, the warm-up rises every step. Validation (with
--config.validation.data.root) takes one centre clip per video, in the net's 256 crop.
Every field and its default: stres_jax/config/base.py (get_train_config).
"""
from stres_jax.config.base import get_train_config


def get_config():
    config = get_train_config("ir_csn_152")
    config.frozen_bn = True
    config.num_epochs = 58
    config.batch_size = 8
    config.optimizer.learning_rate = 5e-4
    config.optimizer.reference_batch = 96
    config.optimizer.warmup_epochs = 16.0
    config.optimizer.warmup_factor = 0.1
    config.optimizer.milestones = (32, 48)
    config.optimizer.clip_grad_norm = 40.0
    config.validation.protocol.clips_per_video = 1
    config.validation.protocol.crops = 1
    config.checkpoint_every_steps = 200
    return config
