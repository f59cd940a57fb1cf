"""A seeded fuzzer for the torch-free checkpoint reader: structural mutants of `.pth` files that
`torch.save` wrote (zip and legacy) from a random torchvision net, each deterministic from (seed, id).

    python -m tests.fuzz_checkpoints --count 500            # CI (tests/test_integrity.py)
    python -m tests.fuzz_checkpoints --count 5000 --full    # by hand: whole mc3_18 state dicts

Mutations: the pickle's integers (storage offsets, sizes, strides, element counts), its storage
dtypes and opcodes, the zip's headers and declared member sizes, the legacy format's element
counts, truncation. Each mutant must be refused in one line naming the file, or read to exactly
what torch.load(weights_only=True) reads from it (or, where torch refuses a harmless change,
to the seed's own values); any other exception, a disagreement, a
MemoryError under the address-space bound (6 GB) or a read over 10 s is a failure.
"""
import argparse
import io
import json
import pickletools
import re
import resource
import signal
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from stres_jax.errors import UserError

MUTATIONS = ("int", "dtype", "opcode", "zip_size", "zip_header", "truncate", "legacy_count")
STORAGES = ("FloatStorage", "DoubleStorage", "HalfStorage", "LongStorage", "BoolStorage", "ByteStorage", "NotAStorage")
LIMIT_BYTES = 6 << 30


def seeds(folder, full=False):
    """(zip path, legacy path, {key: shape}) of a random mc3_18 (its stem, layer1 and fc unless `full`)."""
    import torch
    from tests.torch_reference import random_torchvision_model
    state = random_torchvision_model("mc3_18").state_dict()
    if not full:
        state = {k: v for k, v in state.items() if k.startswith(("stem.", "layer1.0.", "fc."))}
    zip_path, legacy_path = Path(folder) / "seed-zip.pth", Path(folder) / "seed-legacy.pth"
    torch.save(state, zip_path)
    torch.save(state, legacy_path, _use_new_zipfile_serialization=False)
    return zip_path, legacy_path, {k: tuple(v.shape) for k, v in state.items()}


def _ops(data, start, count):
    """[(name, arg, start, end)] of `count` consecutive pickles from byte `start`."""
    stream, found = io.BytesIO(data), []
    stream.seek(start)
    for _ in range(count):
        items = list(pickletools.genops(stream))
        ends = [pos for _, _, pos in items[1:]] + [stream.tell()]
        found += [(op.name, arg, pos, end) for (op, arg, pos), end in zip(items, ends)]
    return found


def _int_op(value):
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def mutate_pickle(data, ops, rng, kind):
    """`data` with one pickle op changed (ops: `_ops` of the pickles that may change)."""
    if kind == "int":
        chosen = [o for o in ops if o[0] in ("BININT", "BININT1", "BININT2", "LONG1")]
        name, value, start, end = chosen[rng.integers(len(chosen))]
        value = int(rng.choice([-1, 0, 1, value - 1, value + 1, -value, 2**31, 2**62, -2**40, value * 1000, 40000]))
        return data[:start] + _int_op(value) + data[end:], {"op": name, "at": start, "value": value}
    if kind == "dtype":
        chosen = [o for o in ops if o[0] == "GLOBAL" and str(o[1]).endswith("Storage")]
        if chosen:
            _, _, start, end = chosen[rng.integers(len(chosen))]
            name = STORAGES[rng.integers(len(STORAGES))]
            return data[:start] + f"ctorch\n{name}\n".encode() + data[end:], {"at": start, "dtype": name}
    name, _, start, end = ops[rng.integers(len(ops))]
    how = ("delete", "duplicate", "byte")[rng.integers(3)]
    if how == "delete":
        return data[:start] + data[end:], {"op": name, "at": start, "how": how}
    if how == "duplicate":
        return data[:end] + data[start:end] + data[end:], {"op": name, "at": start, "how": how}
    return data[:start] + bytes([int(rng.integers(256))]) + data[start + 1:], {"op": name, "at": start, "how": how}


def _rezip(original, members):
    """A zip with `members` ({name: bytes}) stored as torch writes them (valid CRCs and sizes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info.filename, members.get(info.filename, source.read(info.filename)))
    return out.getvalue()


def mutant(zip_seed, legacy_seed, seed, index):
    """(bytes, recipe) of mutant `index`."""
    rng = np.random.default_rng([seed, index])
    legacy = bool(rng.integers(2))
    data = legacy_seed if legacy else zip_seed
    kind = MUTATIONS[rng.integers(len(MUTATIONS))]
    recipe = {"seed": seed, "id": index, "format": "legacy" if legacy else "zip", "mutation": kind}
    if kind in ("int", "dtype", "opcode"):
        if legacy:
            ops = _ops(data, 0, 5)
            mutated, detail = mutate_pickle(data, ops, rng, kind)
        else:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                pickle_bytes = archive.read(name)
            changed, detail = mutate_pickle(pickle_bytes, _ops(pickle_bytes, 0, 1), rng, kind)
            mutated = _rezip(data, {name: changed})
        return mutated, {**recipe, **detail}
    data = bytearray(data)
    if kind == "truncate":
        cut = int(rng.integers(1, len(data)))
        return bytes(data[:cut]), {**recipe, "cut": cut}
    if kind == "legacy_count" and legacy:
        end = _ops(bytes(data), 0, 5)[-1][3]  # the raw storages follow the fifth pickle
        struct.pack_into("<q", data, end, int(rng.choice([-1, 0, 2**40, 2**62, 1])))
        return bytes(data), recipe
    if kind in ("zip_size", "legacy_count") and not legacy:
        headers = [m.start() for m in re.finditer(rb"PK\x01\x02", data)]
        at = headers[rng.integers(len(headers))]
        struct.pack_into("<I", data, at + 24, int(rng.choice([0, 1, 2**31, 2**32 - 1, 400 << 20])))
        return bytes(data), {**recipe, "header": at}
    at = int(rng.integers(len(data))) if legacy else int(
        rng.choice([m.start() for m in re.finditer(rb"PK\x03\x04|PK\x01\x02|PK\x05\x06", data)]) + rng.integers(4, 30))
    data[min(at, len(data) - 1)] ^= int(rng.integers(1, 256))
    return bytes(data), {**recipe, "at": at}


def shape_check(shapes):
    """The converter's contract for the seed's keys: the same shapes, or KeyMismatch-like refusal."""
    def check(found):
        if found != shapes:
            key = next(k for k in sorted(set(found) | set(shapes)) if found.get(k) != shapes.get(k))
            raise UserError(f"key {key!r}: shape {found.get(key)} does not fit {shapes.get(key)}")
        return sum(int(np.prod(s)) * 4 for s in shapes.values()) + 8 * len(shapes)
    return check


def outcome(path, check, original):
    """("refused" | "converted" | "traceback: ..." | "malformed: ..." | "disagree: ...")."""
    import torch
    from stres_jax.checkpoints.torch_file import read_state_dict
    try:
        ours = read_state_dict(path, check)
    except UserError as err:
        text = str(err)
        return "refused" if "\n" not in text and (str(path) in text or "key " in text) else f"malformed: {text[:200]}"
    except Exception as err:  # noqa: BLE001 (what the fuzzer is for)
        return f"traceback: {type(err).__name__}: {str(err)[:200]}"
    try:
        theirs = {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}
    except Exception as err:  # noqa: BLE001
        same = sorted(ours) == sorted(original) and all(np.array_equal(ours[k], original[k]) for k in original)
        return "converted" if same else f"disagree: torch refuses ({type(err).__name__}) what we read"
    if sorted(ours) != sorted(theirs) or any(not np.array_equal(ours[k], theirs[k], equal_nan=True) or
                                             ours[k].dtype != theirs[k].dtype for k in theirs):
        return "disagree: values differ from torch.load"
    return "converted"


def run(count, seed=0, full=False, save=None):
    """{outcome kind: count, "failures": [recipes]} over `count` mutants."""
    with tempfile.TemporaryDirectory(prefix="stres_jax_fuzz_pth_") as folder:
        zip_path, legacy_path, shapes = seeds(folder, full)
        zip_seed, legacy_seed, check = zip_path.read_bytes(), legacy_path.read_bytes(), shape_check(shapes)
        import torch
        original = {k: v.numpy() for k, v in torch.load(zip_path, weights_only=True).items()}
        report, path = {"refused": 0, "converted": 0, "failures": []}, Path(folder) / "mutant.pth"
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("over 10 s")))
        for index in range(count):
            data, recipe = mutant(zip_seed, legacy_seed, seed, index)
            path.write_bytes(data)
            signal.alarm(10)
            try:
                result = outcome(path, check, original)
            except TimeoutError:
                result = "hang: over 10 s"
            finally:
                signal.alarm(0)
            if result in ("refused", "converted"):
                report[result] += 1
            else:
                report["failures"].append({**recipe, "outcome": result})
                if save:
                    Path(save).mkdir(parents=True, exist_ok=True)
                    (Path(save) / f"mutant-{seed}-{index}.pth").write_bytes(data)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="whole mc3_18 state dicts (slower)")
    parser.add_argument("--save", help="write failing mutants here")
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, resource.getrlimit(resource.RLIMIT_AS)[1]))
    report = run(args.count, args.seed, args.full, args.save)
    print(json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
