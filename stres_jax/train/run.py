"""`train(config, workdir)`: the whole run behind `python -m stres_jax.train` (configs/finetune.py)."""
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stres_jax.config.check import TRAIN as TRAIN_RULES
from stres_jax.config.check import check_config
from stres_jax.checkpoints.hub import preset_of
from stres_jax.checkpoints.store import read_meta, save_checkpoint
from stres_jax.runtime.interrupt import GracefulStop, Stopped, resume_command
from stres_jax.runtime.quiet import quiet_absl
from stres_jax.data.sampling import ClipPlan
from stres_jax.data.sources import check_data
from stres_jax.runtime.distributed import initialize_distributed
from stres_jax.errors import UserError
from stres_jax.loader import ModelOptions, checked_checkpoint, load_net
from stres_jax.runtime.mesh import data_shardings, global_rows, traced_on
from stres_jax.models import ARCH_SPECS, canonical_arch, create_model
from stres_jax.train.data import ClipSampler, close_batches, next_batch, train_batches, training_videos
from stres_jax.train.init import new_head, torchvision_init, trainable_filter
from stres_jax.train.log import RunLog
from stres_jax.train.step import init_state, make_train_step, sgd
from stres_jax.train.validate import Validator, has_validation
from stres_jax.runtime.atomic import check_folder
from stres_jax.runtime.workdir import claim_workdir, clear_workdir
from stres_jax.runtime.xla_options import compiler_options

TRAIN_OUTPUTS = ("checkpoints", "best", "final", "tensorboard", "metrics.jsonl", "skipped.json")  # --fresh clears
IDENTITY_KEYS = ("arch", "checkpoint", "from_scratch", "bn_momentum", "seed", "batch_size", "num_epochs", "frozen_stages",
                 "dtype", "data", "sampling", "optimizer", "validation")


def learning_rate_schedule(optimizer, steps_per_epoch, batch_size):
    """torchvision's recipe: lr scaled to the batch, linear warm-up from `warmup_factor`, then
    x`gamma` at each milestone epoch (counted from the start, as the reference's)."""
    lr = optimizer.learning_rate * (batch_size / optimizer.reference_batch if optimizer.reference_batch else 1)
    warmup = int(optimizer.warmup_epochs * steps_per_epoch)
    decay = optax.piecewise_constant_schedule(
        lr, {max(int(m * steps_per_epoch) - warmup, 1): optimizer.gamma for m in optimizer.milestones})
    if not warmup:
        return decay
    return optax.join_schedules([optax.linear_schedule(lr * optimizer.warmup_factor, lr, warmup), decay], [warmup])


def run_preset(config):
    """The preset the run's clips follow and its checkpoints record: the starting checkpoint's
    (its arch's from scratch), with the config's `sampling.frame_interval`."""
    if config.from_scratch:
        preset = ARCH_SPECS[canonical_arch(config.arch)].preset
    else:
        preset = preset_of(read_meta(checked_checkpoint(ModelOptions.from_config(config))))
    if preset.sampling != "mmaction" and config.sampling.frame_interval != 1:
        raise UserError(f"sampling.frame_interval={config.sampling.frame_interval} applies to mmaction2's sampling "
                        f"(the CSN nets); this net samples at sampling.frame_rate: leave frame_interval at 1")
    return preset.replace(frame_interval=config.sampling.frame_interval)


def start_variables(config, classes, preset):
    """(model, float32 variables, where they came from) for the run's classes."""
    arch = canonical_arch(config.arch)
    dtype = jnp.dtype(config.dtype)
    model = create_model(arch, num_classes=len(classes), conv_impl=config.conv_impl, dtype=dtype,
                         bn_momentum=config.bn_momentum, preset=preset)
    if config.from_scratch:
        return model, torchvision_init(model, config.seed), "torchvision init"
    # float32 weights as stored, BN kept: the config's dtype applies to the training model only
    net = load_net(dataclasses.replace(ModelOptions.from_config(config), fold_batchnorm=False, dtype="float32"))
    variables = net.variables
    if list(net.labels) != list(classes):
        variables = new_head(variables, len(classes), config.seed)
    return model, jax.tree.map(np.asarray, variables), str(net.directory)


def check_identity(workdir, config, write=True):
    """A workdir serves one run: refuse to resume one made with another config's essentials
    (`write=False`: check only; the run claims it once every check has passed)."""
    identity = {key: config[key].to_dict() if hasattr(config[key], "to_dict") else config[key]
                for key in IDENTITY_KEYS}
    # keys added since, at values that change nothing, are left out: workdirs made before them resume
    if ARCH_SPECS[canonical_arch(config.arch)].preset.sampling != "mmaction":  # no interval in torchvision's
        identity["sampling"].pop("frame_interval", None)
    if not identity["optimizer"].get("clip_grad_norm", 1):
        identity["optimizer"].pop("clip_grad_norm")
    claim_workdir(workdir, identity, "checkpoints/*", "pass --fresh (--config.fresh=True) to start it afresh", write=write)


def train(config, workdir):
    """Train as the config says; returns the final checkpoint directory on process 0, else None."""
    import orbax.checkpoint as ocp  # slow to import; only needed here
    if config.dtype == "float64":  # for exactness checks: needs 64-bit types before anything runs
        jax.config.update("jax_enable_x64", True)
    check_config(config, TRAIN_RULES)
    check_data(config.data)
    if has_validation(config.validation.data):
        check_data(config.validation.data, "validation.data")
    initialize_distributed(config.distributed)
    workdir = check_folder(Path(workdir).absolute())
    if config.fresh:
        clear_workdir(workdir, TRAIN_OUTPUTS)
    check_identity(workdir, config, write=False)
    rows, replicated = data_shardings(config.batch_size)  # the cheap checks before any video is probed
    preset = run_preset(config)  # reads only the checkpoint's meta
    lead = jax.process_index() == 0
    plan = ClipPlan(config.sampling.clips_per_video, config.sampling.clip_len, config.sampling.frame_rate or None,
                    preset=preset)
    videos, skipped, classes, num_videos = training_videos(config.data, plan)
    for entry in skipped:
        print(f"stres_jax.train: skipped {entry['reason']}", file=sys.stderr)
    if not videos:
        raise UserError(f"none of the {num_videos} training videos could be read")
    model, variables, origin = start_variables(config, classes, preset)
    if config.dtype == "float64":
        variables = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    sampler = ClipSampler(videos, plan.clips, plan.clip_len, config.seed, preset)
    steps_per_epoch = sampler.per_epoch // config.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"{sampler.per_epoch} clips per epoch are fewer than the batch size {config.batch_size}")
    total_steps = steps_per_epoch * config.num_epochs
    optimizer = sgd(learning_rate_schedule(config.optimizer, steps_per_epoch, config.batch_size),
                    config.optimizer.momentum, config.optimizer.weight_decay, config.optimizer.clip_grad_norm)
    check_identity(workdir, config)  # every check passed: the workdir is this run's
    if lead:
        (workdir / "skipped.json").write_text(json.dumps(skipped, indent=1))
    local_batch = config.batch_size // jax.process_count()
    state = jax.device_put(init_state(model, variables, optimizer), replicated)
    step_fn = jax.jit(traced_on(make_train_step(model, optimizer, trainable_filter(config.frozen_stages),
                                                       config.get("frozen_bn", False)), rows),
                      in_shardings=(replicated, rows, rows), out_shardings=(replicated, replicated),
                      donate_argnums=0, compiler_options=compiler_options(config.cpu_library))
    manager = ocp.CheckpointManager(workdir / "checkpoints", options=ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, create=True))
    start = manager.latest_step() or 0
    if start:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = manager.restore(start, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
    iterator = iter(train_batches(sampler, total_steps, local_batch, jax.process_index(),
                                  jax.process_count(), config.num_workers, first_step=start))

    def save(step):
        with quiet_absl():  # orbax warns of "Waiting for previous save" at every save
            manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
            manager.wait_until_finished()

    validator = Validator(model, config, classes, state) if has_validation(config.validation.data) else None
    best = BestCheckpoint(workdir / "best", canonical_arch(config.arch), classes, preset) if lead else None
    if start and lead:
        print(f"stres_jax.train: resuming from step {start} of {total_steps} ({workdir / 'checkpoints'})",
              file=sys.stderr)
    stop = GracefulStop("stres_jax.train", "stopping after the step in flight and its checkpoint")
    log = RunLog(workdir, start, total_steps, lead)
    replaced = ReplacedClips(config.data.max_replaced_fraction, steps_per_epoch * config.batch_size)
    stop.__enter__()  # not a `with`: the loop's `finally` below closes it with the data
    try:
        tick = time.perf_counter()
        for step in range(start + 1, total_steps + 1):
            batch = next_batch(iterator)
            clips = global_rows(rows, batch["clips"])
            state, metrics = step_fn(state, clips, global_rows(rows, batch["labels"]))
            log.step()
            epoch = (step - 1) // steps_per_epoch + 1
            replaced.add(batch["replaced"], epoch)
            if step % config.log_every_steps == 0 or step == total_steps:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                values["clips_per_second"] = config.batch_size * config.log_every_steps / (time.perf_counter() - tick)
                log.train(step, epoch, {**values, **replaced.since_last_log()})
                tick = time.perf_counter()
            if step % steps_per_epoch == 0 and validator is not None:  # before the epoch's checkpoint:
                scores = validator(state)  # a run killed meanwhile validates again on resume
                log.validation(step, epoch, scores)
                if best is not None:
                    best.offer(state, scores, step, epoch)
                tick = time.perf_counter()
            if step % config.checkpoint_every_steps == 0 or step % steps_per_epoch == 0 or stop:
                save(step)
            if stop:
                raise Stopped(f"stopped at step {step} of {total_steps} ({stop.name}), checkpoint "
                                      f"saved; to resume, run the same command again: {resume_command()}",
                                      stop.exit_status)
    finally:
        stop.__exit__(None, None, None)
        log.close()
        close_batches(iterator)
    final = float32_variables(state)
    if not lead:
        return None
    return save_checkpoint(workdir / "final", canonical_arch(config.arch), final, classes,
                           {"trained_from": origin, "steps": total_steps, "workdir": str(workdir)}, preset=preset)


class ReplacedClips:
    """Clips a training run replaced because they failed to load, summed over every process:
    logged per interval (`replaced_clips`, and `replaced_not_video`: a bug or a worker, not the
    video), and a one-line stop once an epoch replaces more than `fraction` of its clips."""

    def __init__(self, fraction, clips_per_epoch):
        self.fraction, self.clips_per_epoch = fraction, clips_per_epoch
        self.epoch, self.in_epoch, self.in_interval = None, np.zeros(2, np.int64), np.zeros(2, np.int64)

    def add(self, local_counts, epoch):
        counts = np.asarray(local_counts, np.int64).reshape(-1, 2).sum(0)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            counts = np.asarray(multihost_utils.process_allgather(counts)).reshape(-1, 2).sum(0)
        if epoch != self.epoch:
            self.epoch, self.in_epoch = epoch, np.zeros(2, np.int64)
        self.in_epoch += counts
        self.in_interval += counts
        if self.in_epoch.sum() > self.fraction * self.clips_per_epoch:
            raise UserError(f"epoch {epoch} replaced {self.in_epoch.sum()} of its {self.clips_per_epoch} clips "
                            f"({self.in_epoch[0]} unreadable, {self.in_epoch[1]} for other reasons; stderr names "
                            f"each), more than data.max_replaced_fraction = {self.fraction}; fix the data or raise it")

    def since_last_log(self):
        values = {"replaced_clips": int(self.in_interval.sum()), "replaced_not_video": int(self.in_interval[1])}
        self.in_interval = np.zeros(2, np.int64)
        return values


def float32_variables(state):
    """The state's params and batch_stats as float32 numpy (what a stres_jax checkpoint holds)."""
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return jax.tree.map(lambda a: np.asarray(a, np.float32), jax.device_get(variables))


class BestCheckpoint:
    """`W/best/`: a stres_jax checkpoint of the weights with the highest validation video acc@1
    so far (ties keep the earlier one); its metadata holds the score, step and epoch."""

    def __init__(self, directory, arch, classes, preset):
        self.directory, self.arch, self.classes, self.preset = directory, arch, classes, preset
        self.score = read_meta(directory)["source"]["video_acc1"] if directory.is_dir() else -1.0

    def offer(self, state, scores, step, epoch):
        if scores["video_acc1"] > self.score:
            self.score = scores["video_acc1"]
            save_checkpoint(self.directory, self.arch, float32_variables(state), self.classes,
                            {"video_acc1": self.score, "video_acc5": scores["video_acc5"],
                             "step": step, "epoch": epoch}, preset=self.preset)
