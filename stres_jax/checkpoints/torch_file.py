"""Read PyTorch state_dict files without torch, and without running any pickled code.

Handles PyTorch's zip format (1.6+), the legacy pre-1.6 stream format (torchvision's
2019 video checkpoints) and safetensors. Unpickling resolves globals only through an
allow-list of tensor-building names mapped to our own numpy functions, so a pickle that
names anything else is refused before any of it runs.
"""
import collections
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from stres_jax.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointFormatError(UserError, ValueError):
    """The file is not a readable state_dict, or is not safe to read."""


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _StorageRef:
    """A storage named in the pickle; its bytes are attached once they have been read."""

    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel
        self.data = None  # 1-D numpy array


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)

    def materialise(self, name):
        flat = self.storage.data
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if flat is None or (np.prod(self.size) > 0 and last >= flat.size):
            raise CheckpointFormatError(f"tensor {name!r} points outside its storage (corrupt file?)")
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, strides)
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args, **unused_kwargs):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused_args, **unused_kwargs):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path, self.storages = path, {}

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointFormatError(
                f"{self.path}: refused: its pickle names {module}.{name}, which is not a "
                "tensor type; nothing in the file was run. Only load checkpoints you trust, "
                "or convert them to .safetensors first") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointFormatError(f"{self.path}: unknown persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"{self.path}: storage of unknown type {storage_type!r:.80}")
        ref = self.storages.setdefault(key, _StorageRef(storage_type.dtype, key, numel))
        if view is not None:  # legacy view of a larger storage: (view_key, offset, size)
            _view_key, offset, size = view
            return _ViewRef(ref, offset, size)
        return ref


class _ViewRef(_StorageRef):
    def __init__(self, base, offset, size):
        self.base, self.offset_in_base, self.numel = base, offset, size
        self.dtype, self.key = base.dtype, base.key

    @property
    def data(self):
        if self.base.data is None:
            return None
        return self.base.data[self.offset_in_base:self.offset_in_base + self.numel]


def _unpickle(file, path):
    unpickler = _AllowListUnpickler(file, path)
    try:
        return unpickler.load(), unpickler.storages
    except CheckpointFormatError:
        raise
    except Exception as err:  # truncated or garbled pickle stream
        raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({err})") from None


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointFormatError(f"{path}: zip file without data.pkl: not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as file:
            obj, storages = _unpickle(file, path)
        for key, ref in storages.items():
            try:
                raw = archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise CheckpointFormatError(f"{path}: storage {key} is missing (truncated file?)") from None
            ref.data = np.frombuffer(raw, ref.dtype, count=ref.numel)
    return obj


def _read_legacy(path):
    with open(path, "rb") as file:
        header = [_unpickle(file, path)[0] for _ in range(3)]
        if header[0] != LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        obj, storages = _unpickle(file, path)
        keys, _ = _unpickle(file, path)
        for key in keys:
            ref = storages[key]
            count_bytes = file.read(8)
            if len(count_bytes) < 8:
                raise CheckpointFormatError(f"{path}: file ends early (truncated download?)")
            (numel,) = struct.unpack("<q", count_bytes)
            raw = file.read(numel * ref.dtype.itemsize)
            if len(raw) < numel * ref.dtype.itemsize:
                raise CheckpointFormatError(f"{path}: file ends early (truncated download?)")
            ref.data = np.frombuffer(raw, ref.dtype)
    return obj


def _to_arrays(obj, path):
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    arrays = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointFormatError(f"{path}: entry {name!r} is not a tensor")
        arrays[name] = value.materialise(name)
    return arrays


def read_state_dict(path):
    """`{key: numpy array}` from a .pth (zip or legacy) or .safetensors file."""
    path = str(path)
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as err:
        raise CheckpointFormatError(f"{path}: cannot read ({err.strerror})") from None
    if head.startswith(b"PK\x03\x04"):
        return _to_arrays(_read_zip(path), path)
    if head[:1] == b"\x80":  # a pickle protocol opcode: the legacy stream format
        return _to_arrays(_read_legacy(path), path)
    if len(head) >= 9 and head[8:9] == b"{":
        from safetensors.numpy import load_file
        try:
            return load_file(path)
        except Exception as err:
            raise CheckpointFormatError(f"{path}: unreadable safetensors file ({err})") from None
    raise CheckpointFormatError(f"{path}: neither a PyTorch .pth nor a .safetensors file")
