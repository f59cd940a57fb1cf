"""Read PyTorch state_dict files without torch, and without running any pickled code.

Handles PyTorch's zip format (1.6+), the legacy pre-1.6 stream format (torchvision's
2019 video checkpoints) and safetensors. Unpickling resolves globals only through an
allow-list of tensor-building names mapped to our own numpy functions, so a pickle that
names anything else is refused before any of it runs.
"""
import os
import struct
import zipfile

import numpy as np

from stres_jax.checkpoints.unpickle import CheckpointFormatError, TensorRef, unpickle
from stres_jax.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_PICKLE_BYTES = 64 << 20  # a state dict's pickle is a few hundred KB

def _check_tensors(obj, path, check):
    """{name: TensorRef} of the state dict, every view checked against its storage, the shapes
    against the net (`check`), and the bytes against a bound, before a storage byte is read."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    tensors, elements = {}, 0
    for name, value in obj.items():
        if not isinstance(name, str):
            raise CheckpointFormatError(f"{path}: a key that is not a string ({name!r:.40})")
        if not isinstance(value, TensorRef):
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
            obj, storages = unpickle(file, path)
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
        header = [unpickle(file, path)[0] for _ in range(3)]
        if header[0] != LEGACY_MAGIC:
            raise CheckpointFormatError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        obj, storages = unpickle(file, path)
        tensors, _ = _check_tensors(obj, path, check)
        keys, _ = unpickle(file, path)
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
