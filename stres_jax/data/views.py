"""A preset's pixels: each decoded frame resized and cut into its crops, then the values normalised.

The torchvision preset resizes with `transforms.resize_region_uint8` (only the pixels a crop
needs); a short-side preset resizes the whole frame with OpenCV as mmcv does, then crops as
mmaction2's `CenterCrop` / `ThreeCrop`.
"""
import numpy as np

from stres_jax.data import transforms
from stres_jax.models.preset import TORCHVISION


def resized_size(height, width, preset):
    """(H, W) of a frame after the preset's resize (mmcv's `rescale_size` for a short side)."""
    if preset.resize:
        return tuple(preset.resize)
    factor = min(np.inf / max(height, width), preset.short_side / min(height, width))
    return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def opencv_resize(frame, preset):
    """`frame` resized by a short-side `preset` with OpenCV's bilinear, as mmcv's `Resize` does."""
    import cv2  # opencv-python-headless: only the short-side (mmaction2) presets need it
    height, width = resized_size(frame.shape[0], frame.shape[1], preset)
    if (height, width) == frame.shape[:2]:
        return np.ascontiguousarray(frame)
    return cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=cv2.INTER_LINEAR)


def view_offsets(height, width, preset, count):
    """(top, left) of each of `count` crops on the resized (height, width) frame: the torchvision
    preset's centre (3: left, centre, right at the centre rows), or mmaction2's CenterCrop
    (floor of half the margin) and ThreeCrop (both ends and the middle of the long side)."""
    crop = preset.crop
    if preset.interpolation == "torch":
        top = int(round((height - crop) / 2.0))
        return [(top, left) for left in transforms.crop_lefts(count, (height, width), crop)]
    if count == 1:
        return [((height - crop) // 2, (width - crop) // 2)]
    if height == crop:
        step = (width - crop) // 2
        return [(0, 0), (0, step), (0, 2 * step)]
    step = (height - crop) // 2
    return [(0, 0), (step, 0), (2 * step, 0)]


def frame_views(frame, preset=TORCHVISION, count=1):
    """One decoded (H, W, 3) uint8 frame -> `(count, crop, crop, 3)` uint8, its views."""
    if preset.interpolation == "torch":
        if count == 1:
            return transforms.resize_crop_uint8(frame[None], tuple(preset.resize), preset.crop)
        top, _ = view_offsets(*preset.resize, preset, 1)[0]
        band = transforms.resize_region_uint8(frame[None], tuple(preset.resize),
                                              (top, 0, preset.crop, preset.resize[1]))[0]
        return np.stack([band[:, left: left + preset.crop] for _, left in view_offsets(*preset.resize, preset, count)])
    resized = opencv_resize(frame, preset)
    crop = preset.crop
    return np.stack([resized[top: top + crop, left: left + crop]
                     for top, left in view_offsets(resized.shape[0], resized.shape[1], preset, count)])


def normalize(frames_uint8, preset=TORCHVISION):
    """uint8 -> float32: (x / 255 - mean) / std for `scale` 1, (x - mean) / std for 255."""
    if preset.scale == 1:
        return transforms.normalize(frames_uint8, preset.mean, preset.std)
    return transforms.standardize(frames_uint8.astype(np.float32), preset.mean, preset.std)
