"""Hand-made `.pth` files with the standard library alone (pickle opcodes and zipfile, no torch):
each is one of the shapes a hostile or damaged checkpoint takes."""
import pickle
import struct
import zipfile


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value):
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(value):
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _storage(key, numel, dtype="FloatStorage", legacy=False):
    fields = [_text("storage"), _global("torch", dtype), _text(key), _text("cpu"), _int(numel)]
    return _tuple(*fields, *([b"N"] if legacy else [])) + b"Q"  # BINPERSID


def _tensor(storage, offset, size, stride):
    ordered = _global("collections", "OrderedDict") + b")R"
    return (_global("torch._utils", "_rebuild_tensor_v2")
            + _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89", ordered)
            + b"R")


def state_pickle(entries):
    """A protocol-2 pickle of an OrderedDict {name: tensor bytes}."""
    body = b"".join(_text(name) + value for name, value in entries.items())
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + b"(" + body + b"u."


def write_zip(path, entries, storages, declared=None):
    """torch's zip layout: archive/data.pkl and archive/data/KEY; `declared`: {key: size} to deflate
    a storage of that many zero bytes instead (a zip bomb)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", state_pickle(entries))
        archive.writestr("archive/version", "3\n")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        for key, size in (declared or {}).items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                block = bytes(1 << 20)
                for _ in range(size >> 20):
                    member.write(block)
    return path


def write_legacy(path, entries, storages, keys=None, counts=None):
    """torch's pre-1.6 stream: magic, protocol, sys info, the state pickle, its storage keys, then
    each storage as an 8-byte element count and its bytes."""
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    header = magic + pickle.dumps(1001, protocol=2) + pickle.dumps({"little_endian": True}, protocol=2)
    body = state_pickle(entries) + pickle.dumps(list(keys if keys is not None else storages), protocol=2)
    for key, raw in storages.items():
        count = (counts or {}).get(key, len(raw) // 4)
        body += struct.pack("<q", count) + raw
    path.write_bytes(header + body)
    return path


def _full(shapes, legacy=False):
    """(entries, storages) of a whole state dict of zeros with `shapes` ({key: shape}), contiguous."""
    entries, storages = {}, {}
    for i, (key, shape) in enumerate(shapes.items()):
        numel, strides = 1, []
        for n in reversed(shape):
            strides.insert(0, numel)
            numel *= n
        dtype, size = ("LongStorage", 8) if key.endswith("num_batches_tracked") else ("FloatStorage", 4)
        entries[key] = _tensor(_storage(str(i), numel, dtype, legacy), 0, shape, strides)
        storages[str(i)] = bytes(numel * size)
    return entries, storages


def crafted(folder, shapes):
    """{name: path} of the crafted files, each to be refused in one line; `shapes` are a net's
    torchvision state-dict shapes, so that the files whose flaw lies in the data pass every check before."""
    one, many = struct.pack("<f", 1.0), bytes(4 * 400)
    entries, storages = _full(shapes)
    legacy_entries, legacy_storages = _full(shapes, legacy=True)
    files = {
        "negative-stride": write_zip(folder / "negative-stride.pth",
                                     {"fc.bias": _tensor(_storage("0", 400), 399, (400,), (-1,))}, {"0": many}),
        "negative-offset": write_zip(folder / "negative-offset.pth",
                                     {"fc.bias": _tensor(_storage("0", 400), -200, (400,), (1,))}, {"0": many}),
        "stride-0-giant": write_zip(folder / "stride-0-giant.pth",
                                    {"fc.weight": _tensor(_storage("0", 1), 0, (40000, 40000), (0, 0))}, {"0": one}),
        "negative-size": write_zip(folder / "negative-size.pth",
                                   {"fc.bias": _tensor(_storage("0", 400), 0, (-400,), (1,))}, {"0": many}),
        "negative-count": write_zip(folder / "negative-count.pth",
                                    {"fc.bias": _tensor(_storage("0", -400), 0, (400,), (1,))}, {"0": many}),
        "short-storage": write_zip(folder / "short-storage.pth", entries, {**storages, "0": bytes(40)}),
        "not-a-storage": write_zip(folder / "not-a-storage.pth",
                                   {"fc.bias": _tensor(_int(7), 0, (400,), (1,))}, {}),
        "zip-bomb": write_zip(folder / "zip-bomb.pth", entries, {k: v for k, v in storages.items() if k != "0"},
                              declared={"0": 400 << 20}),
        "legacy-bad-key": write_legacy(folder / "legacy-bad-key.pth", legacy_entries, legacy_storages,
                                       keys=["no-such-key", *list(legacy_storages)[1:]]),
        "legacy-negative-count": write_legacy(folder / "legacy-negative-count.pth", legacy_entries, legacy_storages,
                                              counts={"0": -1}),
    }
    return files
