"""torchvision's `VideoClassification` preset (the weights' own transform), in numpy.

uint8 frames -> bilinear resize to exactly (128, 171) without antialias, computed in
float32 and rounded back to uint8 -> centre crop 112 -> /255 -> normalise. Training clips
follow torchvision's reference train preset instead (`train_view`: resized in float).
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


def clip_shape(clip_len=CLIP_LEN, batch=None, crop=CROP):
    """`(clip_len, crop, crop, 3)`: one preprocessed clip, with a leading `batch` axis if given."""
    shape = (clip_len, crop, crop, 3)
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
    top, left = origin or (_crop_start(resize[0], crop), _crop_start(resize[1], crop))
    return resize_region_uint8(frames, resize, (int(top), int(left), crop, crop))


def resize_region_uint8(frames, resize, region):
    """(T, H, W, C) uint8 -> the `region` (top, left, height, width) of the frames resized to
    `resize` without antialias, as uint8; each pixel as PyTorch's upsample_bilinear2d."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, C) uint8 frames, got {frames.dtype} {frames.shape}")
    return np.clip(np.rint(resize_region(frames, resize, region)), 0, 255).astype(np.uint8)


def resize_region(frames, resize, region):
    """(T, H, W, C) uint8 or float32 -> the float32 `region` of the resized frames, unrounded
    (PyTorch's float kernel)."""
    _, height, width, _ = frames.shape
    top, left, out_height, out_width = region
    if (height, width) == tuple(resize):  # frames of a clip store: every tap is (1, 0), exactly
        return frames[:, top: top + out_height, left: left + out_width].astype(np.float32)
    r0, r1, hw0, hw1 = _taps(height, resize[0], top, out_height)
    c0, c1, ww0, ww1 = _taps(width, resize[1], left, out_width)
    rows0 = frames[:, r0].astype(np.float32)
    rows1 = frames[:, r1].astype(np.float32)
    ww0, ww1 = ww0[:, None], ww1[:, None]
    upper = _lerp(ww0, rows0[:, :, c0], ww1, rows0[:, :, c1])
    lower = _lerp(ww0, rows1[:, :, c0], ww1, rows1[:, :, c1])
    return _lerp(hw0[:, None, None], upper, hw1[:, None, None], lower)


def crop_lefts(crops, resize=RESIZE, crop=CROP):
    """Left edges of the spatial crops on the resized frame (all at the centre rows): 1 crop: the
    preset's centre (x=30 of 171); 3 crops: left, centre, right (x=0, 30, 59)."""
    centre = _crop_start(resize[1], crop)
    if crops == 1:
        return (centre,)
    if crops == 3:
        return (0, centre, resize[1] - crop)
    raise ValueError(f"crops must be 1 or 3, got {crops}")


def resize_views_uint8(frames, crops=1):
    """(T, H, W, C) uint8 -> (crops, T, 112, 112, C): the clip's spatial views. One view is
    exactly `resize_crop_uint8`; three are cut from one resized band of the frame."""
    if crops == 1:
        return resize_crop_uint8(frames)[None]
    top = _crop_start(RESIZE[0], CROP)
    band = resize_region_uint8(frames, RESIZE, (top, 0, CROP, RESIZE[1]))
    return np.stack([band[:, :, left: left + CROP] for left in crop_lefts(crops)])


def normalize(frames_uint8, mean=MEAN, std=STD):
    """uint8 -> float32 in [0, 1] -> (x - mean) / std, per channel (last axis)."""
    return standardize(frames_uint8.astype(np.float32) / np.float32(255), mean, std)


def standardize(x, mean=MEAN, std=STD):
    """(x - mean) / std per channel (last axis), float32. Computed with the channels interleaved
    along rows of W*C values: the same float32 operations, 2x faster than broadcasting over 3."""
    x = np.asarray(x, np.float32)
    width = x.shape[-2]
    rows = x.reshape(x.shape[:-2] + (-1,))
    out = np.subtract(rows, np.tile(np.asarray(mean, np.float32), width))
    out /= np.tile(np.asarray(std, np.float32), width)
    return out.reshape(x.shape)


def train_view(frames, origin, flip):
    """(T, H, W, 3) uint8 -> (T, 112, 112, 3) float32: one draw of torchvision's reference train
    preset (ConvertImageDtype, Resize(128x171) without antialias, RandomHorizontalFlip,
    Normalize, RandomCrop(112)) with the crop at `origin` (top, left) of the flipped frame."""
    top, left = origin
    if flip:  # the same pixels, read from the unflipped frame
        left = RESIZE[1] - CROP - left
    frames = np.asarray(frames)
    if frames.shape[1:3] == RESIZE:  # a clip store's frames: resizing is the identity, so crop first
        view = frames[:, top: top + CROP, left: left + CROP].astype(np.float32) / np.float32(255)
    else:
        x = frames.astype(np.float32) / np.float32(255)
        view = resize_region(x, RESIZE, (int(top), int(left), CROP, CROP))
    view = standardize(view)  # per pixel, so flipping after it gives the same values
    return np.ascontiguousarray(view[:, :, ::-1]) if flip else view


def train_clip(video, indices, origin, flip):
    """One training clip (`train_view`) of a video (a reader, VideoItem or path), each frame
    transformed as it is decoded."""
    from stres_jax.data.readers import FileReader, as_reader
    reader = as_reader(video)
    if isinstance(reader, FileReader):  # each full-size frame transformed as it is decoded
        return reader.frames(indices, lambda frame: train_view(frame[None], origin, flip)[0])
    return train_view(reader.frames(indices), origin, flip)


def preprocess(frames):
    """`(T, H, W, 3)` uint8 frames -> `(T, 112, 112, 3)` float32, as the torchvision preset."""
    return normalize(resize_crop_uint8(frames))


def train_clip_task(video, indices, origin, flip):
    """Worker task: one training clip of a reader (or a file path) (`transforms.train_clip`, float32)."""
    yield train_clip(video, indices, origin, flip)
