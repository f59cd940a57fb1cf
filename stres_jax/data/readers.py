"""Readers: one video's frames, wherever they live. Every reader has `probe()` (a VideoInfo,
nothing decoded where the source allows) and `frames(indices, transform=None)` (the frames at
`indices`, each passed through `transform`), and is small and picklable, so that a decoding
worker process (`data.workers`) can be handed one.

`isolated`: its frames come from a foreign decoder (PyAV, TFDS's), so eval and training read
them in a DecodeWorkers process, where a crash or a hang costs one video. `sequential`: it
must be loaded in order in the calling process (`load()` gives an ArrayReader)."""
import numpy as np

from stres_jax.data.decode import VideoInfo, iter_frames, probe, read_frames


def _apply(frames, transform):
    return np.stack([transform(frame) for frame in frames]) if transform else frames


def constant_rate_info(key, fps, num_frames, width=0, height=0):
    """The VideoInfo of `num_frames` frames at exactly `fps`."""
    return VideoInfo(key, float(fps), np.arange(num_frames) / float(fps), width, height)


class FileReader:
    """A video file, decoded by PyAV."""
    isolated, sequential = True, False

    def __init__(self, path):
        self.path = str(path)

    def probe(self):
        return probe(self.path)

    def frames(self, indices, transform=None):
        return read_frames(self.path, indices, transform)


class ArrayReader:
    """Frames already in memory, `(T, H, W, 3)` uint8 at `fps`."""
    isolated, sequential = False, False

    def __init__(self, key, frames, fps):
        self.key, self.array, self.fps = key, np.asarray(frames), float(fps)

    def probe(self):
        return constant_rate_info(self.key, self.fps, len(self.array), self.array.shape[2], self.array.shape[1])

    def frames(self, indices, transform=None):
        return _apply(self.array[np.asarray(indices, np.int64)], transform)


class LoadingReader:
    """A video that only a sequential reader can produce (a TFDS split read through tf.data):
    `load()`, called in order, returns its ArrayReader."""
    isolated, sequential = False, True

    def __init__(self, key, load, fps):
        self.key, self._load, self.fps = key, load, fps

    def load(self):
        return ArrayReader(self.key, self._load(), self.fps)


class TfdsExampleReader:
    """Example `index` of a TFDS split prepared as array_record, read by index; its header
    (frame count) without decoding, its frames by TFDS's image decoder."""
    isolated, sequential = True, False

    def __init__(self, key, builder_dir, split, index, fps):
        self.key, self.builder_dir, self.split, self.index, self.fps = key, builder_dir, split, index, float(fps)

    def _access(self):
        from stres_jax.data.tfds_videos import random_access
        return random_access(self.builder_dir, self.split)

    def header(self):
        """(label index, number of frames)."""
        return self._access().header(self.index)

    def probe(self):
        return constant_rate_info(self.key, self.fps, self.header()[1])

    def frames(self, indices, transform=None):
        return _apply(self._access().frames(self.index, indices), transform)


def as_reader(video):
    """The reader of a reader, a VideoItem or a file path."""
    if hasattr(video, "probe") and hasattr(video, "frames"):
        return video
    if hasattr(video, "reader"):
        return video.reader
    return FileReader(video)


def stream_frames(reader, indices, transform=None):
    """The frames at non-decreasing `indices` one by one: a file's decoded in one streaming pass
    (memory does not grow with its length), other readers' as `frames` gives them."""
    if not isinstance(reader, FileReader):
        yield from reader.frames(indices, transform)
        return
    wanted, counts = np.unique(np.asarray(indices, np.int64), return_counts=True)
    repeats = dict(zip(wanted.tolist(), counts.tolist()))
    for index, frame in iter_frames(reader.path, wanted, transform):
        for _ in range(repeats[index]):
            yield frame


def probe_task(video):
    """Worker task: the VideoInfo of a reader (or a file path)."""
    yield as_reader(video).probe()
