"""Decoding videos ahead of the devices (a thread pool), and cutting their clips into
fixed-size, padded batches for a data-parallel step."""
import collections
import queue
import threading
import concurrent.futures

import jax
import numpy as np

from stres_jax.data.clips import clips_task, plan_clips_of
from stres_jax.data.views import normalize
from stres_jax.models.preset import TORCHVISION
from stres_jax.runtime.distributed import any_process
from stres_jax.errors import UserError


def decoded_videos(items, load_clips, workers, prefetch):
    """Yield `(item, clips or UserError)` in order, decoding up to `prefetch` videos ahead.

    `load_clips(item, reader)` makes the clips. Sequential readers are loaded here, in order,
    and their ArrayReader passed; the others are read by the worker threads. A video that
    fails yields its error, never raises.
    """
    items, pending = iter(items), collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
        def submit():
            item = next(items, None)
            if item is not None:
                reader = _guarded(lambda it: it.reader.load(), item) if item.reader.sequential else item.reader
                if isinstance(reader, UserError):
                    pending.append((item, _done(reader)))
                else:
                    pending.append((item, pool.submit(_guarded, lambda it: load_clips(it, reader), item)))
        for _ in range(max(prefetch, 1)):
            submit()
        while pending:
            item, future = pending.popleft()
            submit()
            yield item, future.result()


def streamed_videos(items, open_video, workers, depth=4):
    """Yield `(item, messages)` in order, where `messages` iterates what `open_video(item, reader)`
    yields; up to `workers` videos decode at once, each through a queue of `depth` messages, so
    nothing holds a whole video. A failure is raised by `messages` as a UserError."""
    items, pending, stop = iter(items), collections.deque(), threading.Event()

    def put(box, message):
        while not stop.is_set():
            try:
                return box.put(message, timeout=0.2)
            except queue.Full:
                continue

    def feed(item, reader, box):
        try:
            if isinstance(reader, UserError):
                raise reader
            for message in open_video(item, reader):
                put(box, ("message", message))
            put(box, ("end", None))
        except Exception as err:  # noqa: BLE001 (a decoder failure costs this video only)
            put(box, ("error", err if isinstance(err, UserError) else UserError(f"{item.key}: {type(err).__name__}: {err}")))

    def messages(box):
        while True:
            kind, value = box.get()
            if kind == "error":
                raise value
            if kind == "end":
                return
            yield value

    with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
        def submit():
            item = next(items, None)
            if item is not None:
                reader = _guarded(lambda it: it.reader.load(), item) if item.reader.sequential else item.reader
                box = queue.Queue(depth)
                pool.submit(feed, item, reader, box)
                pending.append((item, box))
        try:
            for _ in range(max(workers, 1)):
                submit()
            while pending:
                item, box = pending.popleft()
                yield item, messages(box)
                submit()
        finally:
            stop.set()


def _done(value):
    future = concurrent.futures.Future()
    future.set_result(value)
    return future


def clip_loader(plan, workers=None):
    """`load_clips(item, reader)` for `decoded_videos` by a ClipPlan: isolated readers (files,
    TFDS records) are read in the `workers` processes (data.workers.DecodeWorkers), the others here."""
    def load(item, reader):
        if reader.isolated and workers is not None:
            return list(workers.run(item.key, clips_task, reader, plan))[0]
        return plan_clips_of(reader, plan)
    return load


def _guarded(fn, item):
    try:
        return fn(item)
    except UserError as err:
        return err
    except Exception as err:  # an unexpected decoder failure must not cost the other videos
        return UserError(f"{item.key}: {type(err).__name__}: {err}")


def submit_padded(parallel, clips, clip_shape, preset=TORCHVISION):
    """Start `parallel` on uint8 `clips` zero-padded to its local batch, normalised by `preset`;
    returns at once, so the caller reads the next batch while the devices compute this one."""
    batch = np.zeros((parallel.local_batch,) + tuple(clip_shape), np.uint8)
    for i, clip in enumerate(clips):
        batch[i] = clip
    return parallel.submit(normalize(batch, preset))


def run_videos(videos, parallel, clip_shape, on_video, stopped=lambda: False, preset=TORCHVISION):
    """Push every clip of `videos` through `parallel` in fixed-size, padded local batches.

    `on_video(item, outputs or UserError)` gets, per video, the stacked per-clip outputs;
    padding rows are dropped, so each clip counts exactly once. All processes loop together.
    Once `stopped()`, only the batch in flight is finished: its videos are delivered, the
    clips not yet submitted are dropped. `preset` normalises the values.
    """
    videos, buffer, partial, in_flight = iter(videos), [], {}, None

    def deliver(rows, submitted):
        outputs = parallel.fetch(submitted)
        for i, (key, _) in enumerate(rows):
            item, count, done = partial[key]
            done.append(jax.tree.map(lambda a: a[i], outputs))
            if len(done) == count:
                del partial[key]
                on_video(item, jax.tree.map(lambda *a: np.stack(a), *done))

    while True:
        while len(buffer) < parallel.local_batch:
            item, clips = next(videos, (None, None)) if not stopped() else (None, None)
            if item is None:
                break
            if isinstance(clips, UserError):
                on_video(item, clips)
                continue
            partial[item.key] = (item, len(clips), [])
            buffer += [(item.key, clip) for clip in clips]
        rows, buffer = ([], []) if stopped() else (buffer[: parallel.local_batch], buffer[parallel.local_batch:])
        more = any_process(len(rows) > 0)
        submitted = None
        if more:
            submitted = (rows, submit_padded(parallel, [clip for _, clip in rows], clip_shape, preset))
        if in_flight:
            deliver(*in_flight)
        in_flight = submitted
        if not more:
            return
