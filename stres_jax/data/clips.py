"""Assemble clips while a video streams past: each frame is decoded once, kept only while needed."""
import functools

import numpy as np

from stres_jax.data.decode import iter_frames
from stres_jax.data.readers import as_reader
from stres_jax.data.views import frame_views
from stres_jax.models.preset import TORCHVISION


def _frame_transform(preset, count):
    """Per decoded frame: its `(count, crop, crop, 3)` views (`views.frame_views`)."""
    return functools.partial(frame_views, preset=preset, count=count)


def _clip_views(frames, count):
    """Stacked per-frame views (T, views, c, c, 3) -> `count` views: (T, c, c, 3) for 1 (the centre
    one), else (count, T, c, c, 3)."""
    clip = np.stack(frames)
    if count == 1:
        return clip[:, clip.shape[1] // 2]
    return np.ascontiguousarray(clip.transpose(1, 0, 2, 3, 4))


def main_views(crops):
    """The `views` of `stream_clips` for `crops` crops of the main clips (windows keep 1), or None."""
    if crops == 1:
        return None
    return functools.partial(_views_of_key, crops)


def _views_of_key(crops, key):
    return crops if key[0] == "main" else 1


def stream_clips(path, jobs, batch_size=8, on_frame=None, views=None, preset=TORCHVISION):
    """Yield batches `[(key, clip)]` of `(T, crop, crop, 3)` uint8 clips (the `preset`'s pixels), in
    one decoding pass.

    `jobs` is `[(key, frame indices)]`. A clip is emitted as soon as its last frame is
    decoded; a frame is dropped once no pending clip needs it. `on_frame(index)` is called
    for each decoded frame (for progress bars). With `views` (`key -> 1 or 3`), each clip is
    `(views, T, crop, crop, 3)`: its spatial crops, cut from frames resized once.
    """
    pending = sorted(((int(np.max(idx)), key, np.asarray(idx)) for key, idx in jobs),
                     key=lambda job: job[0])
    if not pending:
        return
    needed = np.unique(np.concatenate([idx for _, _, idx in pending]))
    frames, ready = {}, []
    transform = _frame_transform(preset, 1 if views is None else 3)
    for index, frame in iter_frames(path, needed, transform=transform):
        frames[index] = frame
        if on_frame:
            on_frame(index)
        while pending and pending[0][0] <= index:
            _, key, idx = pending.pop(0)
            ready.append((key, _clip_views([frames[i] for i in idx], 1 if views is None else views(key))))
            lowest = min((int(i.min()) for _, _, i in pending), default=index + 1)
            for old in [i for i in frames if i < lowest]:
                del frames[old]
        if len(ready) >= batch_size:
            yield ready
            ready = []
    if ready:
        yield ready


def plan_clips_of(video, plan):
    """`(clips x crops, T, crop, crop, 3)` uint8 main clips of a video (a reader, VideoItem or
    path) by a `ClipPlan` (each temporal clip's crops next to each other)."""
    reader = as_reader(video)
    indices = plan.main_clips(reader.probe())
    views = reader.frames(indices.ravel(), _frame_transform(plan.preset, plan.crops))  # (N, crops, c, c, 3)
    views = views.reshape(indices.shape + views.shape[1:]).transpose(0, 2, 1, 3, 4, 5)  # (clips, crops, T, ...)
    return np.ascontiguousarray(views).reshape((-1,) + views.shape[2:])


def clips_task(video, plan):
    """Worker task: the main clips of a reader (or a file path) by a ClipPlan (eval, embed, validation)."""
    yield plan_clips_of(video, plan)


def stream_task(path, jobs, batch_size, crops, preset=TORCHVISION):
    """Worker task: predict's streamed clip batches, each as (last decoded frame, batch)."""
    last = [0]

    def seen(index):
        last[0] = index
    for batch in stream_clips(path, jobs, batch_size, on_frame=seen, views=main_views(crops), preset=preset):
        yield last[0], batch


def window_task(video, windows, batch_size, preset=TORCHVISION):
    """Worker task: batches `[(window number, clip)]` of the eval preset's clips at `windows`
    (N, T) frame indices, streamed: a file is decoded in one pass, each frame kept only while a
    window needs it; other readers (a store, TFDS) are read `batch_size` windows at a time."""
    reader = as_reader(video)
    if hasattr(reader, "path") and reader.isolated:  # a file: one decoding pass for every window
        yield from stream_clips(reader.path, list(enumerate(windows)), batch_size, preset=preset)
        return
    for start in range(0, len(windows), batch_size):
        chunk = windows[start: start + batch_size]
        clips = reader.frames(chunk.ravel(), _frame_transform(preset, 1))
        clips = clips.reshape(chunk.shape + clips.shape[2:])
        yield list(zip(range(start, start + len(chunk)), clips))
