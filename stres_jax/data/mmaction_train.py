"""Training clips as mmaction2's CSN configs cut them (the `train_pipeline` of
`ircsn_ig65m-pretrained-r152-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb.py`).

`SampleFrames(clip_len, frame_interval, num_clips=1)` on the native frames, `Resize(-1, 256)`,
`RandomResizedCrop()`, `Resize(224, 224, keep_ratio=False)`, `Flip(0.5)`, then the data
preprocessor's mean and std on 0-255 values. The resizes are OpenCV's bilinear, as mmcv calls it.
The draws take a numpy Generator and make the same calls, in the same order, as mmaction2's
transforms make on `np.random` and `random`.
"""
import numpy as np

from stres_jax.data.views import opencv_resize, normalize

TRAIN_SIZE = 224            # Resize(scale=(224, 224), keep_ratio=False) after the random crop
AREA_RANGE = (0.08, 1.0)    # RandomResizedCrop's defaults
ASPECT_RANGE = (3 / 4, 4 / 3)
ATTEMPTS = 10


def sample_frames_train(num_frames, clip_len, frame_interval, num_clips, rng):
    """`(num_clips, clip_len)` indices as `SampleFrames(clip_len, frame_interval, num_clips)` in
    train mode (`_get_train_clips` without keep_tail_frames; out-of-range indices looped)."""
    span = clip_len * frame_interval
    average = (num_frames - span + 1) // num_clips
    if average > 0:
        offsets = np.arange(num_clips) * average + rng.integers(average, size=num_clips)
    elif num_frames > max(num_clips, span):
        offsets = np.sort(rng.integers(num_frames - span + 1, size=num_clips))
    elif average == 0:
        offsets = np.around(np.arange(num_clips) * ((num_frames - span + 1.0) / num_clips))
    else:
        offsets = np.zeros(num_clips, np.int64)
    indices = offsets[:, None] + np.arange(clip_len)[None, :] * frame_interval
    return np.mod(indices, max(num_frames, 1)).astype(np.int64)


def random_resized_box(height, width, rng):
    """(left, top, right, bottom) as `RandomResizedCrop.get_crop_bbox` draws it on a (height,
    width) frame: 10 tries of an area and an aspect ratio, else the centred square."""
    aspects = np.exp(rng.uniform(np.log(ASPECT_RANGE[0]), np.log(ASPECT_RANGE[1]), size=ATTEMPTS))
    areas = rng.uniform(*AREA_RANGE, size=ATTEMPTS) * (height * width)
    widths = np.round(np.sqrt(areas * aspects)).astype(np.int32)
    heights = np.round(np.sqrt(areas / aspects)).astype(np.int32)
    for crop_w, crop_h in zip(widths, heights):
        if crop_h <= height and crop_w <= width:
            left = int(rng.integers(0, width - crop_w + 1))   # random.randint(0, width - crop_w)
            top = int(rng.integers(0, height - crop_h + 1))
            return left, top, left + int(crop_w), top + int(crop_h)
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def crop_resize_flip(frames, box, flip, size=TRAIN_SIZE):
    """(T, h, w, 3) uint8 frames (already short-side resized) -> (T, size, size, 3) uint8: the
    box cut out, resized to size x size with OpenCV's bilinear, mirrored if `flip`."""
    import cv2
    left, top, right, bottom = box
    out = np.stack([cv2.resize(np.ascontiguousarray(frame[top:bottom, left:right]), (size, size),
                               interpolation=cv2.INTER_LINEAR) for frame in frames])
    return np.ascontiguousarray(out[:, :, ::-1]) if flip else out


def train_clip(video, indices, box_seed, flip, preset, size=TRAIN_SIZE):
    """`(T, size, size, 3)` float32: one training clip of a reader (or a file path) at `indices`,
    each frame transformed as it is decoded; the crop box is drawn from `box_seed` on the first
    resized frame (every frame of a clip shares it)."""
    from stres_jax.data.readers import as_reader
    box = []

    def view(frame):
        resized = opencv_resize(frame, preset)
        if not box:
            box.append(random_resized_box(resized.shape[0], resized.shape[1], np.random.default_rng(box_seed)))
        return normalize(crop_resize_flip(resized[None], box[0], flip, size), preset)[0]
    return as_reader(video).frames(indices, view)


def train_clip_task(video, indices, box_seed, flip, preset, size=TRAIN_SIZE):
    """Worker task: one training clip (`train_clip`, float32)."""
    yield train_clip(video, indices, box_seed, flip, preset, size)
