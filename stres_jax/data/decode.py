"""Streaming video decoding with PyAV: probe timestamps, then decode only the frames asked for."""
import dataclasses
import os

import av
import numpy as np

from stres_jax.data import sampling
from stres_jax.errors import UserError

MAX_PIXELS = 8192 * 8192  # larger frames are refused before anything is decoded
MAX_FRAMES = int(os.environ.get("STRES_JAX_MAX_FRAMES", 2_000_000))  # about 18 h at 30 fps


class VideoError(UserError):
    """A video that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float               # the container's average frame rate
    times: np.ndarray        # presentation time of every frame, seconds from the first, sorted
    width: int
    height: int

    @property
    def num_frames(self):
        return len(self.times)

    @property
    def duration(self):
        """Seconds to the end of the last frame (shown for the mean frame interval)."""
        if self.num_frames > 1 and not self.is_constant_rate():
            return float(self.times[-1] * self.num_frames / (self.num_frames - 1))
        return float(self.times[-1] + 1.0 / self.fps) if self.num_frames else 0.0

    def is_constant_rate(self, tolerance=0.25):
        """Whether every frame sits within `tolerance` frames of `index / fps`."""
        ideal = np.arange(self.num_frames) / self.fps
        return bool(np.all(np.abs(self.times - ideal) * self.fps <= tolerance))

    def resampled(self, frame_rate):
        """Frame indices at `frame_rate`: torchvision's formula, or by timestamps if the rate varies."""
        if frame_rate is None:
            return np.arange(self.num_frames)
        if self.is_constant_rate():
            return sampling.resample_indices(self.num_frames, self.fps, frame_rate)
        return sampling.resample_by_time(self.times, self.duration, frame_rate)


def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"{path}: is a directory, not a video")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as err:
        raise VideoError(f"{path}: not a readable video ({_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):  # png_pipe, jpeg_pipe, ...
        container.close()
        raise VideoError(f"{path}: an image, not a video; give a video file")
    return container


def _reason(err):
    return getattr(err, "strerror", None) or str(err).split(":")[0] or type(err).__name__


def _unexpected(path, err):
    """Any other failure of PyAV or a damaged file's metadata, as this video's one-line error."""
    if isinstance(err, MemoryError):
        return VideoError(f"{path}: needs more memory than the decoder may use; skipped")
    if isinstance(err, av.error.FFmpegError):
        return VideoError(f"{path}: unreadable video ({_reason(err)})")
    return VideoError(f"{path}: unreadable video (damaged or unsupported data the decoder could not handle)")


def probe(path):
    """Frame rate, size and every frame's timestamp, read by demuxing only (nothing decoded)."""
    try:
        return _probe(path)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 (damaged headers break PyAV in many ways)
        raise _unexpected(path, err) from None


def _probe(path):
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise VideoError(f"{path}: its video stream cannot be decoded (unknown or damaged codec)")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_PIXELS:
            raise VideoError(f"{path}: frame size {width}x{height} ({width * height:,} pixels) is larger than "
                             f"the limit of {MAX_PIXELS:,}; downscale the video first")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        time_base = float(stream.time_base)
        pts = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts)
                    if len(pts) > MAX_FRAMES:
                        raise VideoError(f"{path}: more than {MAX_FRAMES:,} frames; refused "
                                         "(STRES_JAX_MAX_FRAMES raises the limit)")
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: damaged video stream ({_reason(err)})") from None
    if not pts or not rate or width == 0:
        raise VideoError(f"{path}: the video stream holds no frames")
    pts = np.sort(np.asarray(pts, np.int64))
    times = (pts - pts[0]) * time_base
    info = VideoInfo(os.fspath(path), float(rate), times, width, height)
    if info.duration * sampling.FRAME_RATE > MAX_FRAMES:  # resampling would make that many frames
        raise VideoError(f"{path}: its timestamps span {info.duration / 3600:,.0f} hours for {len(pts):,} frames; "
                         "refused as damaged (STRES_JAX_MAX_FRAMES raises the limit)")
    return info


def _upright(frame):
    """RGB uint8 with the stream's display rotation applied."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = int(round(getattr(frame, "rotation", 0) or 0)) // 90 % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def iter_frames(path, indices, transform=None):
    """Yield `(index, frame)` for the sorted unique `indices` (presentation order), streaming.

    Frames are decoded in order and only those asked for are converted to RGB and passed
    through `transform`; nothing else is kept, so memory does not grow with the video.
    """
    try:
        yield from _iter_frames(path, indices, transform)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 (a damaged stream breaks PyAV in many ways)
        raise _unexpected(path, err) from None


def _iter_frames(path, indices, transform):
    wanted = np.unique(np.asarray(indices, np.int64))
    if wanted.size == 0:
        return
    position, index = 0, -1
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index == wanted[position]:
                    image = _upright(frame)
                    yield index, transform(image) if transform else image
                    position += 1
                    if position == wanted.size:
                        return
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: decoding failed at frame {index + 1} ({_reason(err)})") from None
    raise VideoError(f"{path}: the stream ends at frame {index + 1}, "
                     f"before frame {wanted[position] + 1} (truncated file?)")


def read_frames(path, indices, transform=None):
    """The frames at `indices` (repeats allowed) stacked as an array, decoded in one pass."""
    indices = np.asarray(indices, np.int64)
    decoded = dict(iter_frames(path, indices, transform))
    return np.stack([decoded[i] for i in indices])
