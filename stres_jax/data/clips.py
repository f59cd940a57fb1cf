"""Assemble clips while a video streams past: each frame is decoded once, kept only while needed."""
import numpy as np

from stres_jax.data.decode import VideoInfo, iter_frames, probe, read_frames
from stres_jax.data.transforms import resize_crop_uint8


def _resize_crop_frame(frame):
    return resize_crop_uint8(frame[None])[0]


def stream_clips(path, jobs, batch_size=8, on_frame=None):
    """Yield batches `[(key, clip)]` of `(T, 112, 112, 3)` uint8 clips, in one decoding pass.

    `jobs` is `[(key, frame indices)]`. A clip is emitted as soon as its last frame is
    decoded; a frame is dropped once no pending clip needs it. `on_frame(index)` is called
    for each decoded frame (for progress bars).
    """
    pending = sorted(((int(np.max(idx)), key, np.asarray(idx)) for key, idx in jobs),
                     key=lambda job: job[0])
    if not pending:
        return
    needed = np.unique(np.concatenate([idx for _, _, idx in pending]))
    frames, ready = {}, []
    for index, frame in iter_frames(path, needed, transform=_resize_crop_frame):
        frames[index] = frame
        if on_frame:
            on_frame(index)
        while pending and pending[0][0] <= index:
            _, key, idx = pending.pop(0)
            ready.append((key, np.stack([frames[i] for i in idx])))
            lowest = min((int(i.min()) for _, _, i in pending), default=index + 1)
            for old in [i for i in frames if i < lowest]:
                del frames[old]
        if len(ready) >= batch_size:
            yield ready
            ready = []
    if ready:
        yield ready


def plan_clips_of(item, plan, loaded=None):
    """`(clips, T, 112, 112, 3)` uint8 main clips of a VideoItem, by a `ClipPlan`.

    `loaded` is `(frames, fps)` of an in-memory item, already loaded (or its UserError).
    """
    if item.load is None:
        info = probe(item.key)
    elif isinstance(loaded, Exception):
        raise loaded
    else:
        frames, fps = loaded
        info = VideoInfo(item.key, float(fps), np.arange(len(frames)) / float(fps),
                         frames.shape[2], frames.shape[1])
    indices = plan.main_clips(info)
    if item.load is None:
        clips = read_frames(item.key, indices.ravel(), transform=_resize_crop_frame)
    else:
        clips = resize_crop_uint8(frames[indices.ravel()])
    return clips.reshape(indices.shape + clips.shape[1:])
