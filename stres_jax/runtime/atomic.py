"""Atomic writes: a result (a file or a whole directory) is either complete or absent."""
import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a staging path beside `path` to write a file or a directory to; on success it
    replaces `path` (a directory that is there is moved aside first, then removed)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial-{os.getpid()}{path.suffix}")
    _remove(staging)
    try:
        yield staging
        if path.is_dir() and not path.is_symlink():
            previous = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, previous)
            os.replace(staging, path)
            _remove(previous)
        else:
            os.replace(staging, path)
    finally:
        _remove(staging)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_folder(path, what="--workdir"):
    """A one-line UserError when `path`, or a folder it would be made in, is a file."""
    from stres_jax.errors import UserError
    path = Path(path)
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                where = "" if place == path else f" (its parent {place} is)"
                raise UserError(f"{path}: a file, not a folder{where}; give {what} a folder (it is made if missing)")
            return path
    return path
