"""What `stres-jax live` reads: a network URL, standard input, a file or a local camera, as
segments of timestamped RGB frames. A segment ends where the stream does or breaks."""
import dataclasses
import os
import sys
import time

import av
import numpy as np

from stres_jax.errors import UserError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp")  # their end is a drop: retried


class SourceError(UserError):
    """A source that cannot be read (the message names it); `retry` if trying again may help."""

    def __init__(self, message, retry=False):
        super().__init__(message)
        self.retry = retry


@dataclasses.dataclass(frozen=True)
class Source:
    """One source as given on the command line: `kind` is url, stdin, file or camera."""
    text: str
    kind: str

    @classmethod
    def parse(cls, text):
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if text == "-":
            return cls(text, "stdin")
        if text.isdigit() or text.startswith("/dev/video"):
            return cls(text, "camera")
        if scheme:
            if scheme not in NETWORK_SCHEMES:
                raise UserError(f"{text}: unknown stream scheme {scheme!r}; give one of "
                                f"{', '.join(s + '://' for s in NETWORK_SCHEMES)}, -, a file or a camera")
            return cls(text, "url")
        return cls(text, "file")

    @property
    def live(self):
        """Whether its end is a drop to retry rather than the end of the stream."""
        return self.kind == "camera" or (self.kind == "url" and self.text.split("://")[0].lower() in LIVE_SCHEMES)


def _reason(err, stall_timeout=None):
    if isinstance(err, av.error.ExitError) and stall_timeout:  # PyAV's read timeout ended the wait
        return f"no data for {stall_timeout:g} s"
    return getattr(err, "strerror", None) or str(err).split(": '")[0] or type(err).__name__


def open_pyav(source, stall_timeout):
    """An open PyAV container of a url, stdin or file source, or SourceError."""
    if source.kind == "file":
        if not os.path.isfile(source.text):
            raise SourceError(f"{source.text}: no such file" if not os.path.exists(source.text)
                              else f"{source.text}: not a file")
    target = sys.stdin.buffer if source.kind == "stdin" else source.text
    timeout = (stall_timeout, stall_timeout) if source.kind == "url" else None
    try:
        container = av.open(target, timeout=timeout, metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise SourceError(f"{source.text}: not a video (FFmpeg cannot read it)") from None
    except (av.error.FFmpegError, OSError) as err:
        network = source.kind == "url"
        raise SourceError(f"{source.text}: {'cannot be reached' if network else 'cannot be read'} ({_reason(err, stall_timeout)})",
                          retry=network) from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{source.text}: has no video stream")
    name = container.format.name
    if name in ("tty", "image2") or name.endswith("_pipe"):  # FFmpeg shows text as ANSI art, images as one frame
        container.close()
        raise SourceError(f"{source.text}: not a video (FFmpeg reads it as {name})")
    return container


def pyav_frames(source, stall_timeout, realtime=False):
    """Yield `(stream seconds, declared fps or None, RGB uint8 frame)` of one segment; raises
    SourceError where it breaks (retry set for a network source)."""
    container = open_pyav(source, stall_timeout)
    paced = realtime and source.kind == "file"
    started = first = None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        for index, frame in enumerate(container.decode(stream)):
            seconds = float(frame.pts * stream.time_base) if frame.pts is not None and stream.time_base else (
                index / fps if fps else time.monotonic())
            first = seconds if first is None else first
            if paced:
                started = time.monotonic() if started is None else started
                time.sleep(max(0.0, started + seconds - first - time.monotonic()))
            yield seconds - first, fps, frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as err:
        raise SourceError(f"{source.text}: the stream broke ({_reason(err, stall_timeout)})", retry=source.kind == "url") from None
    finally:
        container.close()


def camera_frames(source, stall_timeout):
    """Yield `(seconds, fps, RGB frame)` from a local camera through OpenCV (V4L2)."""
    try:
        import cv2
    except ImportError:
        raise SourceError(f"{source.text}: a camera needs OpenCV: pip install opencv-python-headless") from None
    device = int(source.text) if source.text.isdigit() else source.text
    capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
    if not capture.isOpened():
        raise SourceError(f"{source.text}: cannot open the camera (no such device, or it is busy)")
    fps = capture.get(cv2.CAP_PROP_FPS) or None
    first = None
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                raise SourceError(f"{source.text}: the camera stopped delivering frames", retry=True)
            now = time.monotonic()
            first = now if first is None else first
            yield now - first, fps, np.ascontiguousarray(bgr[..., ::-1])
    finally:
        capture.release()


def segment_frames(source, stall_timeout, realtime=False):
    """One segment of a source's frames (a camera's or PyAV's)."""
    if source.kind == "camera":
        return camera_frames(source, stall_timeout)
    return pyav_frames(source, stall_timeout, realtime)
