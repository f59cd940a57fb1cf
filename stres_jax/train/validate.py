"""Validation during training: the eval protocol (stres_jax.eval's clips, batches and
accuracies) over the validation videos, with the training state's current weights."""
import jax
import numpy as np

from stres_jax.data.sampling import ClipPlan
from stres_jax.data.sources import make_source, source_of
from stres_jax.data.transforms import clip_shape
from stres_jax.data.workers import DecodeWorkers
from stres_jax.inference import forward_fn
from stres_jax.runtime.mesh import DataParallel
from stres_jax.eval.metrics import COUNTS, accuracies, record_counts, video_record
from stres_jax.data.pipeline import clip_loader, decoded_videos, run_videos
from stres_jax.runtime.xla_options import compiler_options

def has_validation(data):
    """Whether a config's `validation.data` block names any videos."""
    return bool(data.root or data.csv or data.tfds_name or data.get("store"))


class Validator:
    """`validator(state) -> {"video_acc1", "video_acc5", "clip_acc1", "clip_acc5", counts}` over
    every process's share of the validation videos (running BN statistics, as eval)."""

    def __init__(self, model, config, classes, state):
        self.classes = list(classes)
        self.plan = ClipPlan.from_protocol(config.validation.protocol, model.preset)
        source_of(config.validation.data, "validation.data").check_plan(config.validation.data, self.plan)
        self.items = make_source(config.validation.data, self.classes)
        self.parallel = DataParallel(forward_fn(model), self._variables(state), config.batch_size,
                                     compiler_options(config.cpu_library))
        self.workers = config.validation.num_workers

    @staticmethod
    def _variables(state):
        return {"params": state["params"], "batch_stats": state["batch_stats"]}

    def __call__(self, state):
        self.parallel.variables = self._variables(state)  # already replicated over the mesh
        mine = self.items[jax.process_index()::jax.process_count()]
        counts = np.zeros(len(COUNTS), np.int64)

        def on_video(item, outputs):
            counts[:] += record_counts(video_record(item, outputs, self.classes, self.plan.crops))
        with DecodeWorkers(self.workers) as workers:  # a crashing decoder costs one video
            videos = decoded_videos(mine, clip_loader(self.plan, workers), self.workers, 2 * max(self.workers, 1))
            run_videos(videos, self.parallel, clip_shape(self.plan.clip_len, crop=self.plan.preset.crop), on_video,
                       preset=self.plan.preset)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            counts = np.asarray(multihost_utils.process_allgather(counts)).sum(0)
        return accuracies(counts)
