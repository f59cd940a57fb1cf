"""Every config value checked before a run starts: a bad one is one line naming the key and
what it must be (`config.batch_size = 0: must be a whole number of at least 1`)."""
import math

from stres_jax.errors import UserError
from stres_jax.loader import RULES as MODEL_RULES
from stres_jax.loader import one_of
from stres_jax.data.sampling import MAX_CLIP_LEN, MAX_CLIPS


def _whole(low, high=None):
    def ok(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    return ok, f"a whole number of at least {low}" + (f" and at most {high}" if high is not None else "")


def _number(low, strict=False):
    def ok(value):
        return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and (value > low if strict else value >= low))
    return ok, f"a finite number {'above' if strict else 'of at least'} {low}"


def _rate():
    from stres_jax.data.sampling import MAX_FRAME_RATE, rate_problem
    return (lambda value: rate_problem(value) is None), f"a finite number from 0 (the native frames) to {MAX_FRAME_RATE:g}"


CLIP_LEN, CLIPS = _whole(1, MAX_CLIP_LEN), _whole(1, MAX_CLIPS)
SHARED = {
    **MODEL_RULES, "batch_size": _whole(1), "num_workers": _whole(0),
    "data.max_videos": _whole(0), "data.tfds_fps": _number(0, strict=True),
    "distributed.num_processes": _whole(1), "distributed.process_id": _whole(0),
}
EVAL = {**SHARED, "prefetch": _whole(1), "protocol.clip_len": CLIP_LEN, "protocol.clips_per_video": CLIPS,
        "protocol.crops": one_of(1, 3), "protocol.frame_rate": _rate()}
TRAIN = {**SHARED, "num_epochs": _whole(1), "bn_momentum": _number(0), "data.max_replaced_fraction": _number(0), "dtype": one_of("float32", "bfloat16", "float64"),
         "frozen_stages": _whole(0, 4), "checkpoint_every_steps": _whole(1), "log_every_steps": _whole(1),
         "keep_checkpoints": _whole(1), "seed": _whole(0), "sampling.clips_per_video": CLIPS,
         "sampling.clip_len": CLIP_LEN, "sampling.frame_rate": _rate(),
         "sampling.frame_interval": _whole(1, 1000),
         "optimizer.learning_rate": _number(0, strict=True), "optimizer.reference_batch": _whole(0),
         "optimizer.momentum": _number(0), "optimizer.weight_decay": _number(0),
         "optimizer.warmup_epochs": _number(0), "optimizer.warmup_factor": _number(0, strict=True),
         "optimizer.gamma": _number(0, strict=True), "optimizer.clip_grad_norm": _number(0), "validation.num_workers": _whole(0),
         "validation.protocol.clip_len": CLIP_LEN, "validation.protocol.clips_per_video": CLIPS,
         "validation.protocol.crops": one_of(1, 3), "validation.protocol.frame_rate": _rate()}


def check_config(config, rules):
    """Raise a UserError for the first value that breaks its rule (keys the config lacks are skipped)."""
    for key, (ok, wanted) in rules.items():
        node = config
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        if node is not None and not ok(node):
            raise UserError(f"config.{key} = {node!r}: must be {wanted}")
    if "distributed" in config and config.distributed.process_id >= config.distributed.num_processes:
        raise UserError(f"config.distributed.process_id = {config.distributed.process_id}: must be below "
                        f"num_processes ({config.distributed.num_processes})")
