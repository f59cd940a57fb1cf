"""torchvision's `VideoClassification` preset (the weights' own transform), in numpy.

uint8 frames -> bilinear resize to exactly (128, 171) without antialias, computed in
float32 and rounded back to uint8 -> centre crop 112 -> /255 -> normalise.
"""
import functools

import numpy as np

from stres_jax.data.sampling import CLIP_LEN

RESIZE = (128, 171)
CROP = 112
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
PREPROCESSING = {"resize": list(RESIZE), "crop": CROP, "mean": list(MEAN), "std": list(STD),
                 "interpolation": "bilinear", "antialias": False, "layout": "NTHWC"}


def clip_shape(clip_len=CLIP_LEN, batch=None):
    """`(clip_len, 112, 112, 3)`: one preprocessed clip, with a leading `batch` axis if given."""
    shape = (clip_len, CROP, CROP, 3)
    return shape if batch is None else (batch,) + shape


@functools.lru_cache(maxsize=64)
def _taps(in_size, out_size, start, count):
    """Source indices (i0, i1) and weights (w0, w1) of output pixels [start, start+count).

    As PyTorch's upsample_bilinear2d (align_corners=False): float32 scale, the source
    coordinate computed in double and stored as float32.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(start, start + count)
    src = np.maximum((np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, np.float32(1) - w1, w1


def _lerp(w0, x0, w1, x1):
    """float32 `fma(w0, x0, w1 * x1)`, the contraction PyTorch's AVX2 kernel makes.

    The float32 products are exact in float64, so one rounding to float32 follows.
    """
    return (w0.astype(np.float64) * x0 + (w1 * x1).astype(np.float64)).astype(np.float32)


def _crop_start(size, crop):
    return int(round((size - crop) / 2.0))  # torchvision's center_crop offset


def resize_crop_uint8(frames, resize=RESIZE, crop=CROP, origin=None):
    """(T, H, W, C) uint8 -> (T, crop, crop, C) uint8: resize without antialias, then crop at
    `origin` (top, left) of the resized frame (default: the centre, as the preset).

    Only the output pixels inside the crop are computed; bilinear is per-pixel, so the
    result equals resizing the whole frame and cropping.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, C) uint8 frames, got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    top, left = origin or (_crop_start(resize[0], crop), _crop_start(resize[1], crop))
    r0, r1, hw0, hw1 = _taps(height, resize[0], int(top), crop)
    c0, c1, ww0, ww1 = _taps(width, resize[1], int(left), crop)
    rows0 = frames[:, r0].astype(np.float32)
    rows1 = frames[:, r1].astype(np.float32)
    ww0, ww1 = ww0[:, None], ww1[:, None]
    top = _lerp(ww0, rows0[:, :, c0], ww1, rows0[:, :, c1])
    bottom = _lerp(ww0, rows1[:, :, c0], ww1, rows1[:, :, c1])
    out = _lerp(hw0[:, None, None], top, hw1[:, None, None], bottom)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def normalize(frames_uint8, mean=MEAN, std=STD):
    """uint8 -> float32 in [0, 1] -> (x - mean) / std, per channel (last axis)."""
    x = frames_uint8.astype(np.float32) / np.float32(255)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess(frames):
    """`(T, H, W, 3)` uint8 frames -> `(T, 112, 112, 3)` float32, as the torchvision preset."""
    return normalize(resize_crop_uint8(frames))
