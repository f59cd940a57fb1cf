"""Read PyTorch state_dict files without torch, and without running any pickled code.

Handles PyTorch's zip format (1.6+), the legacy pre-1.6 stream format (torchvision's
2019 video checkpoints) and safetensors. Unpickling resolves globals only through an
allow-list of tensor-building names mapped to our own numpy functions, so a pickle that
names anything else is refused before any of it runs.
"""
import collections
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from stres_jax.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_DIMS = 8
MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle is a few hundred KB
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

    @property
    def nbytes(self):
        return self.numel * self.dtype.itemsize


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _TensorRef:
    """A tensor named in the pickle: a view (offset, size, stride) of a storage, checked against
    it (`check`) before a byte of the storage is read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def check(self, name, path):
        """Refuse (one line) a view that is malformed or reaches outside its storage; its element count."""
        def refuse(why):
            return CheckpointFormatError(f"{path}: tensor {name!r} {why}; the file is damaged or crafted")
        if not isinstance(self.storage, _StorageRef):
            raise refuse(f"has a {type(self.storage).__name__} where its storage belongs")
        try:
            self.size, self.stride = tuple(self.size), tuple(self.stride)
        except TypeError:
            raise refuse("has a size or stride that is not a sequence") from None
        if not all(_whole(n) for n in (self.offset, *self.size, *self.stride)):
            raise refuse("has an offset, size or stride that is not a whole number")
        if len(self.size) != len(self.stride) or len(self.size) > MAX_DIMS:
            raise refuse(f"has {len(self.size)} sizes and {len(self.stride)} strides")
        if self.offset < 0 or min(self.size, default=0) < 0 or min(self.stride, default=0) < 0:
            raise refuse(f"has a negative offset, size or stride ({self.offset}, {self.size}, {self.stride})")
        numel = 1
        for n in self.size:
            numel *= n
        if numel:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            if last >= self.storage.numel:
                raise refuse(f"reaches element {last:,} of a storage of {self.storage.numel:,}")
            if numel > self.storage.numel:
                raise refuse(f"has {numel:,} elements but its storage holds {self.storage.numel:,}")
        return numel

    def materialise(self):
        flat = self.storage.data
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, strides, writeable=False)
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


class _Inert:
    """Stands for one of the training records mmengine keeps beside the weights (numpy scalars,
    its HistoryBuffer, ConfigDict): built from its pickled arguments and never run; anything in
    the state_dict must still be a tensor."""
    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


_INERT = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
          ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
          ("mmengine.logging.history_buffer", "HistoryBuffer"), ("mmengine.config.config", "ConfigDict"),
          ("collections", "defaultdict"), ("_codecs", "encode"), ("builtins", "getattr"), ("__builtin__", "getattr")}  # numpy pickles its scalars' bytes through _codecs


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path, self.storages = path, {}

    def find_class(self, module, name):
        if (module, name) in _INERT:
            return type(name, (_Inert,), {})
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
        if len(pid) < 5:
            raise CheckpointFormatError(f"{self.path}: storage record of {len(pid)} fields, not 5")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"{self.path}: storage of unknown type {storage_type!r:.80}")
        if not isinstance(key, str) or not _whole(numel) or numel < 0:
            raise CheckpointFormatError(f"{self.path}: storage {key!r:.40} has a bad key or element count {numel!r:.40}")
        ref = self.storages.setdefault(key, _StorageRef(storage_type.dtype, key, numel))
        if ref.dtype != storage_type.dtype or ref.numel != numel:
            raise CheckpointFormatError(f"{self.path}: storage {key!r} is declared twice, differently")
        if view is not None:  # legacy view of a larger storage: (view_key, offset, size)
            try:
                _view_key, offset, size = view
            except (TypeError, ValueError):
                raise CheckpointFormatError(f"{self.path}: storage {key!r} has a malformed view") from None
            if not (_whole(offset) and _whole(size) and 0 <= offset and 0 <= size and offset + size <= numel):
                raise CheckpointFormatError(f"{self.path}: storage {key!r} has a view outside it ({offset!r:.20}, {size!r:.20})")
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


def _check_tensors(obj, path, check):
    """{name: _TensorRef} of the state dict, every view checked against its storage, the shapes
    against the net (`check`), and the bytes against a bound, before a storage byte is read."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    tensors, elements = {}, 0
    for name, value in obj.items():
        if not isinstance(name, str):
            raise CheckpointFormatError(f"{path}: a key that is not a string ({name!r:.40})")
        if not isinstance(value, _TensorRef):
            raise CheckpointFormatError(f"{path}: entry {name!r} is not a tensor")
        elements += value.check(name, path) * value.storage.dtype.itemsize
        tensors[name] = value
    bound = 2 * check({name: t.size for name, t in tensors.items()}) + (1 << 20) if check else _generic_bound(path)
    bases = {id(base): base for base in (getattr(t.storage, "base", t.storage) for t in tensors.values())}
    stored = sum(base.nbytes for base in bases.values())
    if elements > bound or stored > bound:
        raise CheckpointFormatError(f"{path}: its tensors need {max(elements, stored):,} bytes, more than "
                                    f"such a state dict can ({bound:,}); the file is damaged or crafted")
    return tensors, bound


def _generic_bound(path):
    """Bytes a state dict of unknown net may hold: torch stores storages uncompressed, so about the file's size."""
    return 4 * os.path.getsize(path) + (1 << 20)


def _read_zip(path, check):
    with zipfile.ZipFile(path) as archive:
        _check_headers(archive, path)
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise CheckpointFormatError(f"{path}: zip file without data.pkl: not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
            raise CheckpointFormatError(f"{path}: its {pickles[0]} declares "
                                        f"{archive.getinfo(pickles[0]).file_size:,} bytes; not a state dict")
        with archive.open(pickles[0]) as file:
            obj, storages = _unpickle(file, path)
        tensors, bound = _check_tensors(obj, path, check)
        for key, ref in storages.items():
            name = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise CheckpointFormatError(f"{path}: storage {key} is missing (truncated file?)") from None
            if info.file_size != ref.nbytes or info.file_size > bound:  # exactly, as torch.load checks
                raise CheckpointFormatError(f"{path}: storage {key} declares {info.file_size:,} bytes where "
                                            f"{ref.nbytes:,} are needed; the file is damaged or crafted")
            with archive.open(info) as member:
                raw = member.read(ref.nbytes)
            if len(raw) < ref.nbytes:
                raise CheckpointFormatError(f"{path}: storage {key} ends early (truncated file?)")
            ref.data = np.frombuffer(raw, ref.dtype, count=ref.numel)
    return tensors


def _check_headers(archive, path):
    """Each member's local header must agree with the central directory on its sizes (zipfile reads
    the sizes of the one and the bytes after the other)."""
    with open(path, "rb") as file:
        for info in archive.infolist():
            file.seek(info.header_offset)
            local = file.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise CheckpointFormatError(f"{path}: zip member {info.filename!r} has no local header (damaged file?)")
            flags, (compressed, size) = struct.unpack("<H", local[6:8])[0], struct.unpack("<II", local[18:26])
            if not flags & 0x08 and (compressed, size) != (info.compress_size, info.file_size) and 0xFFFFFFFF not in (compressed, size):
                raise CheckpointFormatError(f"{path}: zip member {info.filename!r} declares {size:,} bytes in its "
                                            f"header and {info.file_size:,} in the directory; the file is damaged or crafted")


def _read_legacy(path, check):
    with open(path, "rb") as file:
        header = [_unpickle(file, path)[0] for _ in range(3)]
        if header[0] != LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        obj, storages = _unpickle(file, path)
        tensors, _ = _check_tensors(obj, path, check)
        keys, _ = _unpickle(file, path)
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
            raise CheckpointFormatError(f"{path}: its list of storage keys does not match the storages it uses")
        for key in keys:
            ref = storages[key]
            count_bytes = file.read(8)
            if len(count_bytes) < 8:
                raise CheckpointFormatError(f"{path}: file ends early (truncated download?)")
            (numel,) = struct.unpack("<q", count_bytes)
            if numel != ref.numel:
                raise CheckpointFormatError(f"{path}: storage {key} records {numel:,} elements, its pickle "
                                            f"{ref.numel:,}; the file is damaged or crafted")
            raw = file.read(ref.nbytes)
            if len(raw) < ref.nbytes:
                raise CheckpointFormatError(f"{path}: file ends early (truncated download?)")
            ref.data = np.frombuffer(raw, ref.dtype)
    return tensors


def read_state_dict(path, check=None):
    """`{key: numpy array}` from a .pth (zip or legacy) or .safetensors file.

    `check({key: shape})`, if given, sees every tensor's shape before any data is read: it raises
    on a state dict that does not fit, or returns the bytes such a net holds (the bound on what is
    read). Without it the bound is a few times the file's size."""
    path = str(path)
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError as err:
        raise CheckpointFormatError(f"{path}: cannot read ({err.strerror})") from None
    try:
        if head.startswith(b"PK\x03\x04"):
            tensors = _read_zip(path, check)
        elif head[:1] == b"\x80":  # a pickle protocol opcode: the legacy stream format
            tensors = _read_legacy(path, check)
        elif len(head) >= 9 and head[8:9] == b"{":
            return _read_safetensors(path, check)
        else:
            raise CheckpointFormatError(f"{path}: neither a PyTorch .pth nor a .safetensors file")
    except UserError:  # ours, already one line (a KeyMismatchError of `check` too)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError, ValueError,
            struct.error, OverflowError) as err:  # a damaged zip breaks zipfile in many ways
        raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                                    f"{str(err)[:120]})") from None
    return {name: tensor.materialise() for name, tensor in tensors.items()}


def _read_safetensors(path, check):
    from safetensors import safe_open
    try:
        with safe_open(path, framework="numpy") as file:
            if check:
                check({name: tuple(file.get_slice(name).get_shape()) for name in file.keys()})
            return {name: file.get_tensor(name) for name in file.keys()}
    except UserError:  # ours, or `check`'s
        raise
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
        raise CheckpointFormatError(f"{path}: unreadable safetensors file ({str(err)[:120]})") from None
