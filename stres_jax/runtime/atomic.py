"""Outputs: a result (a file or a whole folder) is either complete or absent, and it replaces only
what a stres_jax command made there before, never a user's file or folder.

`output_path` is the one rule for every user-named destination (`--out`, `--plot`, `fetch`,
`save_pretrained`): it refuses a destination on or above an input, the current folder or the home
folder, and anything already there that is not its own earlier result (a result folder carries
`OUTPUT_MARKER`; a result file is told by its format's own metadata, `MARKS`). `atomic_path` writes
one file or folder atomically inside a folder the command already owns. A killed run's staging
files (`.NAME.partial-HOST-PID...`) are removed by the next run that writes NAME, whatever its pid."""
import contextlib
import errno
import json
import os
import re
import shutil
import socket
import zlib
from pathlib import Path

OUTPUT_MARKER = ".stres_jax-output.json"
HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_PARTIAL = re.compile(r"\.partial-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)")
OVERWRITE_HINT = "give another path, or --overwrite to replace it"


def _user_error(message):
    from stres_jax.errors import UserError
    return UserError(message)


def _staging(path):
    return path.with_name(f".{path.name}.partial-{HOST}-{os.getpid()}{path.suffix}")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder, name=None):
    """Delete the staging files of killed runs in `folder` (of `name` only, when given): those of
    this host whose process is gone, whatever its pid."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    pattern = f".{name}.partial-*" if name else ".*.partial-*"
    for path in folder.glob(pattern):
        match = _PARTIAL.search(path.name)
        if match and match["host"] == HOST and not _pid_alive(int(match["pid"])):
            _remove(path)


STAGING = set()  # the staging paths being written in this process


@contextlib.contextmanager
def atomic_path(path, replace_folder=False):
    """Yield a staging path beside `path` to write a file or a folder to; on success it replaces
    `path`. Only `output_path` (which has checked what is there) may replace a folder."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent, path.name)
    staging = _staging(path)
    _remove(staging)
    STAGING.add(staging)
    try:
        yield staging
        if path.is_dir() and not path.is_symlink():
            if not replace_folder:
                raise _user_error(f"{path}: a folder is in the way of a file; move it, or give another path")
            previous = path.with_name(f".{path.name}.old-{HOST}-{os.getpid()}")
            os.replace(path, previous)
            os.replace(staging, path)
            _remove(previous)
        else:
            os.replace(staging, path)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise disk_full(path, staging) from None
        raise
    finally:
        STAGING.discard(staging)
        _remove(staging)


def remove_staging():
    """Remove every staging file or folder being written now (a process about to end at once)."""
    for staging in list(STAGING):
        _remove(staging)


def disk_full(path, staging=None):
    """The one-line error of a full disk while writing `path`."""
    written = _size(staging) if staging is not None else 0
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = 0
    return _user_error(f"{path}: no space left on its disk (needed more than the {written:,} bytes written, "
                       f"{free:,} bytes free); free some space or write elsewhere, then run again")


def check_space(path, needed):
    """A one-line UserError, before anything is written, when the disk of `path` has less than
    `needed` bytes free (a checkpoint's size is known before it is saved)."""
    folder = next((p for p in (Path(path).absolute(), *Path(path).absolute().parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise _user_error(f"{path}: no space left on its disk for {needed:,} bytes ({free:,} free); free some "
                          "space or write elsewhere, then run again")


def _size(path):
    if path is None or not path.exists():
        return 0
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _png_mark(path):
    with open(path, "rb") as file:
        head = file.read(4096)
    return head.startswith(b"\x89PNG") and b"stres_jax" in head


def _zip_mark(path):
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.comment.startswith(b"stres_jax")
    except (OSError, zipfile.BadZipFile):
        return False


def _onnx_mark(path):
    with open(path, "rb") as file:
        return b"\x12\x09stres_jax" in file.read(64)  # ModelProto.producer_name, written near the start


def _json_mark(path):
    try:
        return json.loads(Path(path).read_text()).get("library") == "stres_jax"
    except (OSError, ValueError, AttributeError):
        return False


def _jsonl_mark(path):
    """`stres-jax live --jsonl`'s lines: each a window with its source, wall time and latency."""
    try:
        with open(path) as file:
            line = file.readline()
        if not line:
            return True  # empty: nothing to lose (a run stopped before its first window)
        first = json.loads(line)
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and {"source", "wall", "latency"} <= set(first)


def _jax_export_mark(path):
    return _json_mark(f"{path}.json")


MARKS = {"png": _png_mark, "npz": _zip_mark, "onnx": _onnx_mark, "json": _json_mark, "jsonl": _jsonl_mark, "jax-export": _jax_export_mark}
PNG_METADATA = {"Software": "stres_jax"}  # matplotlib's savefig(metadata=...): the PNG's own mark
ZIP_COMMENT = b"stres_jax"


def _legacy_result(folder, entries):
    """A checkpoint folder written before the marker existed (meta.json + variables/, or a Hub folder)."""
    if entries <= {"meta.json", "variables"} and "meta.json" in entries:
        return "format_version" in (_read_json(folder / "meta.json") or {})
    if entries <= {"config.json", "model.safetensors"} and "config.json" in entries:
        return (_read_json(folder / "config.json") or {}).get("library") == "stres_jax"
    return False


def _read_json(path):
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def foreign_entries(folder):
    """The entries of `folder` that no stres_jax result put there ([] for an empty folder or a result)."""
    folder = Path(folder)
    entries = {p.name for p in folder.iterdir()}
    marker = _read_json(folder / OUTPUT_MARKER)
    if marker is not None:
        return sorted(entries - set(marker.get("entries", [])) - {OUTPUT_MARKER})
    if not entries or _legacy_result(folder, entries):
        return []
    return sorted(entries)


def check_location(path, inputs=(), what="--out"):
    """Refuse an output on or above an input, the current folder or the home folder (one line)."""
    target = Path(path).expanduser().resolve()
    places = [(Path.cwd(), "the current folder"), (Path.home(), "your home folder")]
    places += [(Path(p), f"the input {p}") for p in inputs]
    for place, name in places:
        place = Path(place).expanduser().resolve()
        if target == place or target in place.parents:
            relation = "is" if target == place else "holds"
            raise _user_error(f"{path}: this {what} {relation} {name}, which an output never replaces; "
                              "give a new path inside a folder of your own")
    return target


def check_output(path, kind, overwrite=False, inputs=(), what="--out"):
    """`path` as an absolute Path if a result of `kind` may be written there, else a one-line
    UserError saying what is there and what to do. `kind` "folder" is a result folder; the file
    kinds are the keys of MARKS."""
    check_location(path, inputs, what)
    path = Path(path).expanduser().absolute()
    blocking = _file_in_the_way(path.parent)
    if blocking is not None:
        raise _user_error(f"{path}: its parent {blocking} is a file; give {what} a path in a folder")
    if path.is_symlink() and not overwrite:
        raise _user_error(f"{path}: a symbolic link is there; {OVERWRITE_HINT} (the link, not its target)")
    if not path.exists():
        return path
    if kind == "folder":
        if not path.is_dir():
            raise _user_error(f"{path}: a file is there, not a result folder; give {what} another path")
        extra = foreign_entries(path)
        if extra:
            shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
            raise _user_error(f"{path}: a folder holding what stres_jax did not write ({shown}); it is never "
                              f"replaced, even with --overwrite: give {what} a new folder")
        return path
    if path.is_dir():
        raise _user_error(f"{path}: a folder is there; give {what} a file path (the folder is never replaced)")
    if overwrite or MARKS[kind](path):
        return path
    raise _user_error(f"{path}: a file that stres_jax did not write is there; {OVERWRITE_HINT}")


@contextlib.contextmanager
def output_path(path, kind, overwrite=False, inputs=(), what="--out"):
    """`atomic_path` for a user-named destination, after `check_output`; a result folder gets its
    marker (the names it holds) before it replaces anything."""
    path = check_output(path, kind, overwrite, inputs, what)
    with atomic_path(path, replace_folder=True) as staging:
        yield staging
        if kind == "folder":
            entries = sorted(p.name for p in staging.iterdir())
            (staging / OUTPUT_MARKER).write_text(json.dumps({"library": "stres_jax", "entries": entries}))


def check_folder(path, what="--workdir", inputs=()):
    """A folder a run fills (a workdir, a features or store --out): refused in one line when it is,
    or would be made in, a file, or when it lies on or above an input, the current or home folder."""
    path = Path(path)
    check_location(path, inputs, what)
    place = _file_in_the_way(path)
    if place is not None:
        where = "" if place == path else f" (its parent {place} is)"
        raise _user_error(f"{path}: a file, not a folder{where}; give {what} a folder (it is made if missing)")
    return path


def _file_in_the_way(folder):
    """The nearest of `folder` and its parents that exists, if it is not a folder (else None)."""
    for place in (folder, *folder.parents):
        if place.exists():
            return None if place.is_dir() else place
    return None
