"""Training clips as the net's references make them, decoded by grain worker processes.

Per epoch every usable video gives `clips_per_video` random clips. A torchvision preset's are
16-frame clips at 15 fps (distinct starts while the video has enough), each through the
reference's train preset: resized to 128x171 in float, randomly flipped, normalised, randomly
cropped to 112x112 (`transforms.train_view`). An mmaction2 preset's (the CSN nets) are cut by
its configs' train pipeline (`data.mmaction_train`: 32 frames every 2nd, a random resized
crop to 224x224, flipped). Videos are read by their source's readers: files (folder, CSV),
examples of a TFDS split prepared as array_record, or a clip store. Sample `i` of the stream depends only on (seed, i), so the stream is the same
with any number of workers, and a resumed run sees exactly the batches it would have seen.
"""
import concurrent.futures
import contextlib
import dataclasses
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time

import grain
import numpy as np

from stres_jax.data import mmaction_train
from stres_jax.data.decode import VideoError
from stres_jax.data.readers import FileReader, probe_task
from stres_jax.data.sources import source_of
from stres_jax.data.transforms import CROP, RESIZE, train_clip_task
from stres_jax.data.workers import DecodeWorkers
from stres_jax.errors import UserError
from stres_jax.models.preset import TORCHVISION
from stres_jax.runtime.progress import progress


@dataclasses.dataclass(frozen=True)
class TrainVideo:
    path: str           # the source's key: the file, tfds:<name>/<split>/<index>, ...
    label: int
    frames: np.ndarray  # the resampled frame list (indices into the video's frames)
    reader: object = None  # where its frames are read (data.readers); None: the file at `path`

    def __post_init__(self):
        if self.reader is None:
            object.__setattr__(self, "reader", FileReader(self.path))


def training_videos(data, plan):
    """(usable TrainVideos, skipped [{"video", "reason"}], class names, number of videos) of a
    config's `data` block; the classes are the folder / CSV names, or the dataset's (TFDS, store)."""
    source = source_of(data)
    source.check_plan(data, plan)
    items, classes = source.training_items(data)
    items = items[: data.max_videos] if data.max_videos else items
    return (*scan_videos(items, classes, plan), classes, len(items))


def scan_videos(items, classes, plan, workers=4):
    """(usable TrainVideos, skipped [{"video", "reason"}]): every video probed once up front;
    files in worker processes (a file that crashes or hangs the demuxer is skipped, not fatal)."""
    index = {name: i for i, name in enumerate(classes)}
    pool = DecodeWorkers(workers) if any(isinstance(item.reader, FileReader) for item in items) else None

    def look(item):
        try:
            if isinstance(item.reader, FileReader):
                info = list(pool.run(item.key, probe_task, item.reader))[0]
            else:
                info = item.reader.probe()
            return TrainVideo(item.key, index[item.label], info.resampled(plan.frame_rate), item.reader), None
        except UserError as err:
            return None, {"video": item.key, "reason": str(err)}
        except Exception as err:  # noqa: BLE001 (a decoder failure must cost only this video)
            return None, {"video": item.key, "reason": f"{item.key}: {type(err).__name__}: {' '.join(str(err).split())}"}
    with contextlib.ExitStack() as stack, concurrent.futures.ThreadPoolExecutor(workers) as threads:
        if pool is not None:
            stack.enter_context(pool)
        found = []
        with progress(len(items), "probing", "video", leave=False) as bar:
            for result in threads.map(look, items):
                found.append(result)
                bar.update()
    videos = [v for v, _ in found if v is not None and len(v.frames)]
    skipped = [s for _, s in found if s is not None]
    return videos, skipped


class ClipSampler:
    """`(global sample index) -> (clip float32 (T, 112, 112, 3), label int)`, picklable for workers;
    (T, 224, 224, 3) by an mmaction2 `preset` (its `frame_interval` apart)."""

    def __init__(self, videos, clips_per_video, clip_len, seed, preset=TORCHVISION):
        self.videos, self.clips_per_video, self.clip_len, self.seed = videos, clips_per_video, clip_len, seed
        self.preset = preset
        mmaction = preset.sampling == "mmaction"  # the decode task that cuts and transforms a clip
        self._task = (mmaction_train.train_clip_task, (preset,)) if mmaction else (train_clip_task, ())
        self.per_epoch = len(videos) * clips_per_video
        self._order = (None, None)  # (epoch, its permutation): made once per epoch, not per sample
        self._decoder = None        # this process's DecodeWorkers, started on first use

    def __getstate__(self):  # grain sends the sampler to its workers; each starts its own decoder
        return {**self.__dict__, "_decoder": None, "_order": (None, None)}

    def __setstate__(self, state):  # in a grain worker: Ctrl-C is the main process's to handle
        self.__dict__.update(state)
        if multiprocessing.parent_process() is None:  # a copy in the main process (copy.deepcopy):
            return  # ignoring SIGINT there would also reach every process it starts later
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to change
            pass

    def close(self):
        """Stop this process's decoding worker (a later `load` starts another)."""
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def epoch_order(self, epoch):
        """The sample order of `epoch`, a seeded permutation."""
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.per_epoch))
        return self._order[1]

    def describe(self, index):
        """(video, frame indices, crop origin, flip) of sample `index`; no decoding. By an mmaction2
        preset the origin is the seed its random resized crop is drawn from (on the resized frame)."""
        epoch, position = divmod(int(index), self.per_epoch)
        video_index, k = divmod(int(self.epoch_order(epoch)[position]), self.clips_per_video)
        video = self.videos[video_index]
        frames = video.frames
        if self.preset.sampling == "mmaction":  # SampleFrames(num_clips=1) per sample, as mmaction2's loader
            clip_rng = np.random.default_rng([self.seed, epoch, video_index, k])
            chosen = mmaction_train.sample_frames_train(len(frames), self.clip_len, self.preset.frame_interval, 1,
                                                        clip_rng)[0]
            return video, frames[chosen], [self.seed, epoch, video_index, k, 1], bool(clip_rng.random() < 0.5)
        if len(frames) < self.clip_len:  # our policy: repeat the last frame (design.md)
            frames = np.concatenate([frames, np.repeat(frames[-1:], self.clip_len - len(frames))])
        starts = len(frames) - self.clip_len + 1
        video_rng = np.random.default_rng([self.seed, epoch, video_index])
        chosen = video_rng.choice(starts, self.clips_per_video, replace=starts < self.clips_per_video)
        clip_rng = np.random.default_rng([self.seed, epoch, video_index, k])
        origin = (int(clip_rng.integers(0, RESIZE[0] - CROP + 1)), int(clip_rng.integers(0, RESIZE[1] - CROP + 1)))
        flip = bool(clip_rng.random() < 0.5)
        return video, frames[chosen[k]: chosen[k] + self.clip_len], origin, flip

    def load(self, index, tries=8):
        """`(clip float32 normalised, label, replaced)` of sample `index`; a clip that fails to decode
        (the video probed fine) is named on stderr and replaced by the next sample's, so batches keep
        their size. `replaced` counts the clips given up here: (the video's fault, anything else:
        a bug or a worker that could not start)."""
        replaced = [0, 0]
        for offset in range(tries):
            video, indices, origin, flip = self.describe(index + offset)
            task, extra = self._task
            try:  # isolated readers in a worker process: a decoder crash or hang costs this clip, not the run
                if video.reader.isolated:
                    if self._decoder is None:
                        self._decoder = DecodeWorkers(1)
                    clip = list(self._decoder.run(video.path, task, video.reader, indices, origin, flip, *extra))[0]
                else:
                    clip = next(task(video.reader, indices, origin, flip, *extra))
            except Exception as err:  # noqa: BLE001 (a decoder failure must cost only this clip)
                video_fault = isinstance(err, VideoError)
                replaced[0 if video_fault else 1] += 1
                why = "" if video_fault else f" (not the video's fault: {type(err).__name__})"
                print(f"stres_jax.train: replaced a clip of {video.path}{why}: {err}", file=sys.stderr)
                continue
            return np.ascontiguousarray(clip), video.label, tuple(replaced)
        raise UserError(f"{tries} clips in a row failed to decode near sample {index}; check the data")


class BatchLoader:
    """`step -> {"clips": (B, T, S, S, 3) float32 (S 112, or 224 by an mmaction2 preset), "labels": (B,) int32, "replaced": [video's fault,
    other causes]}`: this process's rows, and how many clips they replaced."""

    def __init__(self, sampler, local_batch, process_index=0, process_count=1):
        self.sampler, self.local_batch = sampler, local_batch
        self.process_index, self.process_count = process_index, process_count

    def __call__(self, step):
        rows = [self.sampler.load(i) for i in local_indices(step, self.local_batch, self.process_index,
                                                            self.process_count)]
        return {"clips": np.stack([clip for clip, _, _ in rows]),
                "labels": np.asarray([label for _, label, _ in rows], np.int32),
                "replaced": [sum(r[0] for _, _, r in rows), sum(r[1] for _, _, r in rows)]}  # a list: no shared memory


def local_indices(step, local_batch, process_index, process_count):
    """The global sample indices this process feeds at `step` (its slice of the global batch)."""
    start = (step * process_count + process_index) * local_batch
    return range(start, start + local_batch)


def train_batches(sampler, total_steps, local_batch, process_index=0, process_count=1, workers=0, first_step=0):
    """A grain IterDataset of this process's batches for steps [first_step, total_steps). One
    element is one step and depends only on its index, so worker processes take whole steps, the
    order never depends on their number, and a run resumed after `first_step` steps starts here
    (no iterator state to restore into workers that may already be prefetching)."""
    loader = BatchLoader(sampler, local_batch, process_index, process_count)
    dataset = grain.MapDataset.range(first_step, total_steps).map(loader).to_iter_dataset()
    if workers > 0:
        from absl import flags
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl program
            flags.FLAGS.mark_as_parsed()  # (a library caller) they keep their defaults
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=_worker_signals)
    return dataset


def _worker_signals(_index, _count):
    """grain's workers leave SIGINT and SIGTERM to the trainer, which closes them after its last
    save: a Ctrl-C or a SLURM SIGTERM reaches the whole process group, and a worker killed by
    it mid-batch left its shared memory to the resource tracker ("leaked shared_memory")."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent):
    """A grain worker ends once its trainer is gone (SIGKILL, the OOM killer, a SLURM kill after
    the grace period): ignoring SIGTERM, it and its decoders had lived on, holding their memory."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def next_batch(iterator):
    """The next batch of `train_batches`, copied out of grain's shared memory, which is unlinked
    at once: grain leaves that to the arrays' finalizers, and an array still referenced at exit
    (or collected after grain's unlinking pool stopped) is a "leaked shared_memory" warning."""
    batch = {}
    for name, rows in next(iterator).items():
        batch[name] = np.array(rows)
        shm = getattr(rows, "shm", None)
        if shm is not None and getattr(rows, "_unlink_on_del", False):
            rows._unlink_on_del = False  # its finalizer now only closes the mapping
            shm.unlink()
    return batch


def close_batches(iterator):
    """Stop grain's worker processes and unlink every shared-memory batch they sent.

    grain unlinks a batch when its array is collected, and the arrays sit in reference
    cycles: without the copy in `next_batch` and this collection, the last batches were left
    to the resource tracker ("leaked shared_memory objects" at exit)."""
    iterator.close()
    gc.collect()
    _wait_for_unlinks()


def _wait_for_unlinks():
    """grain unlinks the batches it hands over on a thread pool of its own (`enable_async_del`);
    at exit that pool drops what is still queued, and the resource tracker reports those
    segments as leaked. Run the queue dry and unlink synchronously from here on (a later
    iterator starts a new pool)."""
    from grain._src.python.ipc.shared_memory_array import SharedMemoryArray  # no public handle
    pool = SharedMemoryArray._del_thread_pool
    if pool is not None:
        SharedMemoryArray._disable_async_del()
        pool.close()
        pool.join()
