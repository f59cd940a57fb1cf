"""Assemble clips while a video streams past: each frame is decoded once, kept only while needed."""
import functools

import numpy as np

from stres_jax.data.decode import iter_frames
from stres_jax.data.readers import as_reader
from stres_jax.data.transforms import CROP, RESIZE, crop_lefts, resize_crop_uint8, resize_region_uint8


def _resize_crop_frame(frame):
    return resize_crop_uint8(frame[None])[0]


def _resize_band_frame(frame):
    """The resized frame's 112 centre rows at full width (every crop's pixels at once)."""
    return resize_region_uint8(frame[None], RESIZE, ((RESIZE[0] - CROP) // 2, 0, CROP, RESIZE[1]))[0]


def _views(band_clip, count):
    """`count` views (1: the centre crop, 3: left, centre, right) of a band clip."""
    lefts = crop_lefts(count)
    return np.stack([band_clip[:, :, left: left + CROP] for left in lefts])


def main_views(crops):
    """The `views` of `stream_clips` for `crops` crops of the main clips (windows keep 1), or None."""
    if crops == 1:
        return None
    return functools.partial(_views_of_key, crops)


def _views_of_key(crops, key):
    return crops if key[0] == "main" else 1


def stream_clips(path, jobs, batch_size=8, on_frame=None, views=None):
    """Yield batches `[(key, clip)]` of `(T, 112, 112, 3)` uint8 clips, in one decoding pass.

    `jobs` is `[(key, frame indices)]`. A clip is emitted as soon as its last frame is
    decoded; a frame is dropped once no pending clip needs it. `on_frame(index)` is called
    for each decoded frame (for progress bars). With `views` (`key -> 1 or 3`), each clip is
    `(views, T, 112, 112, 3)`: its spatial crops, cut from frames resized once.
    """
    pending = sorted(((int(np.max(idx)), key, np.asarray(idx)) for key, idx in jobs),
                     key=lambda job: job[0])
    if not pending:
        return
    needed = np.unique(np.concatenate([idx for _, _, idx in pending]))
    frames, ready = {}, []
    transform = _resize_crop_frame if views is None else _resize_band_frame
    for index, frame in iter_frames(path, needed, transform=transform):
        frames[index] = frame
        if on_frame:
            on_frame(index)
        while pending and pending[0][0] <= index:
            _, key, idx = pending.pop(0)
            clip = np.stack([frames[i] for i in idx])
            ready.append((key, clip if views is None else _views(clip, views(key))))
            lowest = min((int(i.min()) for _, _, i in pending), default=index + 1)
            for old in [i for i in frames if i < lowest]:
                del frames[old]
        if len(ready) >= batch_size:
            yield ready
            ready = []
    if ready:
        yield ready


def plan_clips_of(video, plan):
    """`(clips x crops, T, 112, 112, 3)` uint8 main clips of a video (a reader, VideoItem or
    path) by a `ClipPlan` (each temporal clip's crops next to each other)."""
    reader = as_reader(video)
    indices = plan.main_clips(reader.probe())
    if plan.crops == 1:
        clips = reader.frames(indices.ravel(), _resize_crop_frame)
        return clips.reshape(indices.shape + clips.shape[1:])
    bands = reader.frames(indices.ravel(), _resize_band_frame)
    bands = bands.reshape(indices.shape + bands.shape[1:])
    views = np.stack([_views(band, plan.crops) for band in bands])  # (clips, crops, T, 112, 112, 3)
    return views.reshape((-1,) + views.shape[2:])


def clips_task(video, plan):
    """Worker task: the main clips of a reader (or a file path) by a ClipPlan (eval, embed, validation)."""
    yield plan_clips_of(video, plan)


def stream_task(path, jobs, batch_size, crops):
    """Worker task: predict's streamed clip batches, each as (last decoded frame, batch)."""
    last = [0]

    def seen(index):
        last[0] = index
    for batch in stream_clips(path, jobs, batch_size, on_frame=seen, views=main_views(crops)):
        yield last[0], batch


def window_task(video, windows, batch_size):
    """Worker task: batches `[(window number, clip)]` of the eval preset's clips at `windows`
    (N, T) frame indices, streamed: a file is decoded in one pass, each frame kept only while a
    window needs it; other readers (a store, TFDS) are read `batch_size` windows at a time."""
    reader = as_reader(video)
    if hasattr(reader, "path") and reader.isolated:  # a file: one decoding pass for every window
        yield from stream_clips(reader.path, list(enumerate(windows)), batch_size)
        return
    for start in range(0, len(windows), batch_size):
        chunk = windows[start: start + batch_size]
        clips = reader.frames(chunk.ravel(), _resize_crop_frame).reshape(chunk.shape + (CROP, CROP, 3))
        yield list(zip(range(start, start + len(chunk)), clips))
