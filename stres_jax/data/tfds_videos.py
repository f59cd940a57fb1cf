"""TFDS video datasets (e.g. `ucf101/ucf101_1`): read in order through tf.data (tfrecord, as
TFDS prepares by default), or by example index from array_record files (training's random
order, and eval of a dataset prepared that way). Frames are decoded by TFDS's own decoders."""
import contextlib
import functools
import importlib.util
import logging
import os
import socket
import sys
import tempfile
from urllib.parse import urlparse

import numpy as np

from stres_jax.errors import UserError, first_line
from stres_jax.runtime.quiet import quiet_absl

VIDEO_KEY, LABEL_KEY = "video", "label"  # the feature names of TFDS's video datasets


def import_tfds():
    """tensorflow_datasets, or a UserError naming the extra that installs it (importlib_resources:
    tfds needs it on its download path but does not declare it)."""
    for name in ("tensorflow_datasets", "importlib_resources"):
        if importlib.util.find_spec(name) is None:
            from stres_jax.install import pip_extra
            raise UserError(f"the TFDS source needs {name}: {pip_extra('tfds')}")
    with _without_tensorflow_info_lines():
        import tensorflow_datasets
        if importlib.util.find_spec("tensorflow"):
            import tensorflow  # noqa: F401  (loaded here, not later outside the filter)
    return tensorflow_datasets


@contextlib.contextmanager
def _without_tensorflow_info_lines():
    """TensorFlow 2.21 writes INFO lines from C++ as it loads ("oneDNN custom operations are on",
    on CPUs with AVX-512 VNNI), whatever TF_CPP_MIN_LOG_LEVEL says; they would turn one-line
    errors into five. Stderr (fd 2) goes to a file meanwhile and all but those lines are shown."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not line.startswith("I0000 ")
                                     and "before absl::InitializeLog() is called" not in line))


def prepared_builder(name, data_dir="", file_format=None):
    """The builder of TFDS dataset `name` (`dataset/config` picks a config), prepared in
    `data_dir` ("" = TFDS's default); one that is not there yet is downloaded and prepared in
    `file_format` (None: TFDS's default, tfrecord)."""
    tfds = import_tfds()
    try:
        with quiet_absl(logging.ERROR):  # "Variant folder ... has no dataset_info.json" for one not prepared
            builder = tfds.builder(name, data_dir=data_dir or None)
            prepared = builder.is_prepared()
    except Exception as err:  # noqa: BLE001 (tfds raises several kinds for an unknown name)
        raise UserError(f"TFDS dataset {name!r}: {first_line(err)}") from None
    if not prepared:
        host = unreachable_download_host(builder) if _downloads(builder) else None
        if host:  # TFDS's downloader would retry for minutes
            raise UserError(f"TFDS dataset {name!r} is not prepared in {data_dir or 'the TFDS data dir'} and its "
                            f"download host {host} cannot be reached (offline?); prepare it where there is a "
                            f"network (tfds build {name}) and point at that data dir")
        try:
            builder.download_and_prepare(file_format=file_format)
        except Exception as err:  # noqa: BLE001 (download and preparation fail in many ways)
            raise UserError(f"TFDS dataset {name!r} is not prepared in {data_dir or 'the TFDS data dir'} and "
                            f"preparing it failed: {first_line(err)}") from None
    return builder


def unreachable_download_host(builder, timeout_s=5.0):
    """The first host of `builder`'s download URLs that does not accept a connection, or None
    (also when the builder lists no URLs: a manual download)."""
    hosts = sorted({urlparse(url).hostname for url in (getattr(builder, "url_infos", None) or {})} - {None})
    for host in hosts:
        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
        except OSError:
            return host
    return None


def _downloads(builder):
    """False under `tfds.testing.mock_data`, whose `download_and_prepare` fetches nothing."""
    return getattr(builder.download_and_prepare, "__name__", "") != "mock_download_and_prepare"


def check_split(builder, split):
    """A UserError naming the splits there are, for a split (or slice, e.g. `train[:10%]`) that is not."""
    names = {part.split("[")[0].strip() for part in split.split("+")}
    if builder.info.splits and not names <= set(builder.info.splits):
        raise UserError(f"{builder.name}: no split {split!r}; it has {sorted(builder.info.splits)}")


class RandomAccess:
    """One split of a dataset prepared as array_record, by example index: label and frame count
    without decoding any frame, and only the chosen frames decoded."""

    def __init__(self, builder_dir, split):
        tfds = import_tfds()
        builder = tfds.builder_from_directory(builder_dir)
        self.records = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
        self.image = builder.info.features[VIDEO_KEY].feature

    def __len__(self):
        return len(self.records)

    def _features(self, index):
        from tensorflow_datasets.proto import tf_example_pb2
        return tf_example_pb2.Example.FromString(self.records[int(index)]).features.feature

    def header(self, index):
        """(label index, number of frames) of example `index`."""
        features = self._features(index)
        return int(features[LABEL_KEY].int64_list.value[0]), len(features[VIDEO_KEY].bytes_list.value)

    def frames(self, index, indices=None):
        """(len(indices), H, W, 3) uint8: the chosen frames of example `index` (default: all)."""
        encoded = self._features(index)[VIDEO_KEY].bytes_list.value
        indices = np.arange(len(encoded)) if indices is None else np.asarray(indices)
        unique, where = np.unique(indices, return_inverse=True)
        decoded = [self.image.decode_example_np(encoded[int(i)]) for i in unique]
        return np.stack(decoded)[where]


@functools.lru_cache(maxsize=8)
def random_access(builder_dir, split):
    """This process's RandomAccess of a split (opened once)."""
    return RandomAccess(builder_dir, split)


def open_random_access(name, split, data_dir=""):
    """(builder directory, RandomAccess, class names) of a TFDS split, or a UserError saying how
    to prepare it as array_record."""
    builder = prepared_builder(name, data_dir, "array_record")
    check_split(builder, split)
    if not _has_array_record(builder):
        where = f" --data_dir={data_dir}" if data_dir else ""
        raise UserError(
            f"{builder.data_dir}: prepared as {builder.info.file_format.value}, but training reads examples "
            f"in random order, which needs array_record: prepare it again with `tfds build {name} "
            f"--file_format=array_record --overwrite{where}` (or convert it: pip install apache-beam; "
            f"tfds convert_format --dataset_version_dir={builder.data_dir} --out_file_format=array_record)")
    classes = list(builder.info.features[LABEL_KEY].names)
    return str(builder.data_dir), random_access(str(builder.data_dir), split), classes


def _has_array_record(builder):
    formats = [builder.info.file_format, *builder.info.alternative_file_formats]
    return "array_record" in [getattr(f, "value", f) for f in formats]


class _SequentialReader:
    """Examples of a split read in order through tf.data; `get(i)` skips forward to example i,
    and starts again from the first when asked for an earlier one (each validation pass)."""

    def __init__(self, dataset):
        self._dataset, self._iterator, self._next = dataset, None, 0

    def get(self, index):
        if self._iterator is None or index < self._next:
            self._iterator, self._next = iter(import_tfds().as_numpy(self._dataset)), 0
        while True:
            example, self._next = next(self._iterator), self._next + 1
            if self._next - 1 == index:
                return np.asarray(example[VIDEO_KEY], np.uint8)


def tfds_examples(name, split, data_dir=""):
    """(class names, [label index of each example, None if unreadable], load(index) -> frames
    uint8) of a split; an unreadable example fails again when loaded (that video's error)."""
    tfds = import_tfds()
    builder = prepared_builder(name, data_dir)
    check_split(builder, split)
    names = list(builder.info.features[LABEL_KEY].names)
    if builder.info.file_format.value == "array_record":  # tf.data cannot read it
        access = random_access(str(builder.data_dir), split)
        return names, [_label_or_none(access, i) for i in range(len(access))], access.frames
    only_labels = builder.as_dataset(split=split, decoders={VIDEO_KEY: tfds.decode.SkipDecoding()})
    labels = [int(example[LABEL_KEY]) for example in tfds.as_numpy(only_labels)]
    return names, labels, _SequentialReader(builder.as_dataset(split=split)).get


def _label_or_none(access, index):
    try:
        return access.header(index)[0]
    except Exception:  # noqa: BLE001 (a damaged record costs this example only)
        return None
