"""The allow-list unpickler of PyTorch checkpoints: tensors become references to storages that
nothing has read yet, and a pickle naming any global outside `_ALLOWED` (tensor builders mapped to
our own functions) or `_INERT` (mmengine's training records, kept as inert stand-ins) is refused
before any of it runs."""
import collections
import pickle

import ml_dtypes
import numpy as np

from stres_jax.errors import UserError

MAX_DIMS = 8
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


class TensorRef:
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
    return TensorRef(storage, storage_offset, size, stride)


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


def unpickle(file, path):
    unpickler = _AllowListUnpickler(file, path)
    try:
        return unpickler.load(), unpickler.storages
    except CheckpointFormatError:
        raise
    except Exception as err:  # truncated or garbled pickle stream
        raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
