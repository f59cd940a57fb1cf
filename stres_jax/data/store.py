"""Clip stores: every video decoded once, resampled to 15 fps and resized to 128x171 exactly as
eval does, then read many times by eval, embed and training (`data.source = "store"`).

`stres-jax prepare ROOT --out STORE` (or `prepare(...)` here) writes it; `open_store(STORE)`
reads it. Layout: `store.json` (identity and class names), `shard-NNNNN.frames` (encoded frames
back to back) with `shard-NNNNN.npz` (each frame's offset, size and CRC-32) and
`shard-NNNNN.json` (its videos and skipped files; written last, so a shard without it is
unfinished and is made again), and on completion `index.json` + `frames.npy`, one table of
every video and every frame that readers map from disk. Frames are read with one `pread` per
clip and checked against their CRC, so a damaged shard costs only the videos whose bytes changed.
"""
import functools
import json
import os
import threading
import zlib
from pathlib import Path

import numpy as np

from stres_jax.data.decode import VideoError
from stres_jax.data.readers import constant_rate_info
from stres_jax.data.transforms import RESIZE, resize_region_uint8
from stres_jax.errors import UserError

FORMAT_VERSION = 1
ENCODINGS = ("jpeg", "lossless")
DEFAULT_ENCODING, DEFAULT_QUALITY = "jpeg", 90
STORE_FILE, INDEX_FILE, FRAMES_FILE = "store.json", "index.json", "frames.npy"
FRAME_ROW = np.dtype([("offset", "<i8"), ("size", "<u4"), ("crc", "<u4")])
COLUMNS = ("key", "class", "shard", "first", "num_frames", "source_fps", "duration", "error")  # error: "" if stored


def encoder(encoding, quality=DEFAULT_QUALITY):
    """`frame (128, 171, 3) uint8 -> bytes`: JPEG (4:4:4, libjpeg-turbo via simplejpeg) or zstd."""
    if encoding == "jpeg":
        import simplejpeg
        return functools.partial(_jpeg, simplejpeg.encode_jpeg, int(quality))
    import zstandard
    return zstandard.ZstdCompressor(level=3).compress


def _jpeg(encode, quality, frame):
    return encode(np.ascontiguousarray(frame), quality=quality, colorspace="RGB", colorsubsampling="444")


def decoder(encoding):
    """`bytes -> frame (128, 171, 3) uint8`, the inverse of `encoder`."""
    if encoding == "jpeg":
        import simplejpeg
        return functools.partial(simplejpeg.decode_jpeg, colorspace="RGB")
    return _unzstd


_local = threading.local()


def _unzstd(blob):
    if not hasattr(_local, "zstd"):  # a decompressor must not be shared between threads
        import zstandard
        _local.zstd = zstandard.ZstdDecompressor()
    return np.frombuffer(_local.zstd.decompress(blob), np.uint8).reshape(RESIZE + (3,))


def whole_frame(frame):
    """One frame resized to 128x171 as the eval preset does (bilinear, no antialias, uint8)."""
    return np.ascontiguousarray(resize_region_uint8(frame[None], RESIZE, (0, 0) + RESIZE)[0])


class Store:
    """A finished clip store: `len(store)`, `classes`, `key(i)`, `label(i)`, `num_frames(i)`,
    `fps`, and `frames(i, indices=None)` -> uint8 `(n, 128, 171, 3)`."""

    def __init__(self, root):
        self.root = Path(root).absolute()
        header = _read_json(self.root / STORE_FILE, f"{self.root}: not a clip store (no {STORE_FILE}); make one "
                            "with `stres-jax prepare`")
        if header.get("identity", {}).get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.root}: a clip store of another format version; prepare it again")
        self.identity, self.classes = header["identity"], list(header["classes"])
        self.fps, self.encoding = float(self.identity["fps"]), self.identity["encoding"]
        if not (self.root / INDEX_FILE).exists():
            done = len(list(self.root.glob("shard-*.json")))
            raise UserError(f"{self.root}: unfinished clip store ({done} of {header['num_shards']} shards); run "
                            "the same `stres-jax prepare` command again to finish it")
        index = _read_json(self.root / INDEX_FILE, f"{self.root}: damaged {INDEX_FILE}; run prepare again")
        self.columns = _checked_columns(self.root, index, header)
        self.rows = np.flatnonzero(self.columns["error"] == "")  # video i is row rows[i]; the others were skipped
        self._frames = None
        self._decode = None

    def __getstate__(self):  # sent to grain's workers: each maps the frame table itself
        return {**self.__dict__, "_frames": None, "_decode": None}

    def __len__(self):
        return len(self.rows)

    def _value(self, name, i):
        return self.columns[name][self.rows[i]]

    def key(self, i):
        """The source's absolute path, or the TFDS id, of video `i`."""
        return str(self._value("key", i))

    def label(self, i):
        """Video `i`'s class, an index into `classes` (-1: the source had none)."""
        return int(self._value("class", i))

    def class_name(self, i):
        label = self.label(i)
        return self.classes[label] if label >= 0 else None

    def num_frames(self, i):
        """Frames stored for video `i` (at `fps`)."""
        return int(self._value("num_frames", i))

    @property
    def skipped(self):
        """[{"video", "reason"}] of the source's videos that `prepare` could not read."""
        return [{"video": str(self.columns["key"][r]), "reason": str(self.columns["error"][r])}
                for r in np.flatnonzero(self.columns["error"] != "")]

    def source_order(self):
        """[(key, class name or None, video index or the skip reason)] of every source video, in the source's order."""
        position = {int(row): i for i, row in enumerate(self.rows)}
        return [(str(self.columns["key"][r]), self.classes[c] if (c := int(self.columns["class"][r])) >= 0 else None,
                 position.get(r, str(self.columns["error"][r]))) for r in range(len(self.columns["key"]))]

    def frames(self, i, indices=None):
        """uint8 `(n, 128, 171, 3)`: all of video `i`'s stored frames, or those at `indices`."""
        count = self.num_frames(i)
        indices = np.arange(count) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= count):
            raise IndexError(f"{self.key(i)}: frame indices must lie in [0, {count}), got {indices.min()}..{indices.max()}")
        if self._frames is None:
            # the decoder before the table: a thread that finds the table must find the decoder too
            # (another thread's slow `import simplejpeg` under load once cost a training run 7 clips)
            self._decode = decoder(self.encoding)
            self._frames = np.load(self.root / FRAMES_FILE, mmap_mode="r")
        unique, where = np.unique(indices, return_inverse=True)
        rows = self._frames[int(self._value("first", i)) + unique] if unique.size else self._frames[:0]
        decoded = [self._decode(blob) for blob in self._read(i, rows)]
        return np.stack(decoded)[where] if decoded else np.zeros((0,) + RESIZE + (3,), np.uint8)

    def _read(self, i, rows):
        """The encoded frames of `rows`, read with one pread and checked against their CRC-32."""
        if not len(rows):
            return []
        path = self.root / f"shard-{int(self._value('shard', i)):05d}.frames"
        start, end = int(rows["offset"].min()), int((rows["offset"] + rows["size"]).max())
        try:
            with open(path, "rb") as file:
                data = os.pread(file.fileno(), end - start, start)
        except OSError as err:
            raise VideoError(f"{self.key(i)}: cannot read {path} ({err.strerror})") from None
        blobs = [data[o - start: o - start + s] for o, s in zip(rows["offset"].tolist(), rows["size"].tolist())]
        for blob, row in zip(blobs, rows):
            if len(blob) != row["size"] or zlib.crc32(blob) != row["crc"]:
                raise VideoError(f"{self.key(i)}: damaged frames in {path} (checksum mismatch); prepare the "
                                 "store again (delete that shard's .json to redo only it)")
        return blobs


@functools.lru_cache(maxsize=4)
def _cached_store(root, stamp):
    return Store(root)


def open_store(path):
    """The finished clip store at `path` (opened once per process while it is unchanged)."""
    root = Path(path).absolute()
    try:
        stamp = tuple((root / name).stat().st_mtime_ns for name in (STORE_FILE, INDEX_FILE))
    except FileNotFoundError:
        return Store(root)  # says what is missing
    return _cached_store(str(root), stamp)


class SkippedReader:
    """A video `prepare` could not read: probing it raises the reason it gave."""
    isolated, sequential = False, False

    def __init__(self, reason):
        self.reason = reason

    def probe(self):
        raise VideoError(self.reason)

    def frames(self, indices, transform=None):
        raise VideoError(self.reason)


class StoreReader:
    """Video `index` of a clip store: frames at the store's 15 fps and 128x171."""
    isolated, sequential = False, False

    def __init__(self, store, index):
        self.store, self.index = store, index

    def probe(self):
        store = self.store
        return constant_rate_info(store.key(self.index), store.fps, store.num_frames(self.index), RESIZE[1], RESIZE[0])

    def frames(self, indices, transform=None):
        frames = self.store.frames(self.index, indices)
        return np.stack([transform(frame) for frame in frames]) if transform else frames


def _checked_columns(root, index, header):
    """The index's columns, checked against each other, the classes and the frame table: an edited
    or truncated index is refused in one line, before a frame is served."""
    def refuse(why):
        return UserError(f"{root / INDEX_FILE}: {why}; the store is damaged: prepare it again")
    if not isinstance(index, dict) or any(not isinstance(index.get(name), list) for name in COLUMNS):
        raise refuse(f"not a table of the columns {', '.join(COLUMNS)}")
    if len({len(index[name]) for name in COLUMNS}) != 1:
        raise refuse("its columns differ in length")
    try:
        columns = {name: np.asarray(index[name], dtype) for name, dtype in
                   zip(COLUMNS, (str, np.int64, np.int64, np.int64, np.int64, np.float64, np.float64, str))}
        table = np.load(root / FRAMES_FILE, mmap_mode="r")
    except (OSError, ValueError, TypeError, OverflowError) as err:
        raise refuse(f"unreadable ({type(err).__name__}: {str(err)[:80]})") from None
    stored = columns["error"] == ""
    first, count = columns["first"][stored], columns["num_frames"][stored]
    if len(set(columns["key"].tolist())) != len(columns["key"]):
        raise refuse("a video key is listed twice")
    if not np.all((columns["class"] >= -1) & (columns["class"] < len(header["classes"]))):
        raise refuse("a class index outside its classes")
    if not np.all((columns["shard"] >= 0) & (columns["shard"] < header["num_shards"])):
        raise refuse("a shard number outside the store")
    if not (np.all(first >= 0) and np.all(count >= 1) and np.all(first + count <= len(table))):
        raise refuse(f"a video's frames (first, num_frames) outside the frame table of {len(table):,} rows")
    order = np.argsort(first, kind="stable")
    if np.any((first + count)[order][:-1] > first[order][1:]):
        raise refuse("two videos' frames overlap")
    return columns


def _read_json(path, message):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise UserError(message) from None
