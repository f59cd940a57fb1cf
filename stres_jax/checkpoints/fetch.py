"""Download torchvision's published checkpoints: sha256-checked, atomic, cached."""
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from stres_jax.runtime.atomic import atomic_path
from stres_jax.runtime.cache import cache_dir
from stres_jax.errors import UserError

PUBLISHED_FILES = {
    "r3d_18": "r3d_18-b3b3357e.pth",
    "mc3_18": "mc3_18-a90a0ba3.pth",
    "r2plus1d_18": "r2plus1d_18-91a641e6.pth",
}
DEFAULT_BASE_URL = "https://download.pytorch.org/models"
BASE_URL_ENV = "STRES_JAX_WEIGHTS_URL"  # a mirror, or a local server in tests


class FetchError(UserError, RuntimeError):
    """A download that failed or did not verify."""


def default_checkpoint_dir(arch):
    """Where `stres-jax fetch ARCH` puts the converted checkpoint."""
    return cache_dir() / "checkpoints" / arch


def expected_sha256_prefix(filename):
    return filename.rsplit("-", 1)[1].split(".")[0]


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_published(arch, path):
    """`path` if it is torchvision's published file for `arch` (by its sha256), else FetchError."""
    filename, prefix = PUBLISHED_FILES[arch], expected_sha256_prefix(PUBLISHED_FILES[arch])
    if not Path(path).is_file():
        raise FetchError(f"{path}: no such file")
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        raise FetchError(f"{path}: sha256 {digest[:8]}... is not that of torchvision's {filename}; "
                         "convert other files to a directory of your choice instead")
    return Path(path)


def download_published(arch, base_url=None, progress=None, timeout=60):
    """Path of torchvision's published file for `arch`, downloaded into the cache if needed."""
    filename = PUBLISHED_FILES[arch]
    prefix = expected_sha256_prefix(filename)
    target = cache_dir() / "torchvision" / filename
    if target.is_file() and sha256_file(target).startswith(prefix):
        return target
    base_url = base_url or os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL)
    url = f"{base_url.rstrip('/')}/{filename}"
    show = sys.stderr.isatty() if progress is None else progress
    try:
        with atomic_path(target) as partial:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=filename, disable=not show) as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
            digest = sha256_file(partial)
            if not digest.startswith(prefix):
                raise FetchError(f"{url}: downloaded file has sha256 {digest[:8]}..., expected {prefix}...; "
                                 "the download is corrupt: run the command again")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise FetchError(f"cannot download {url} ({reason})") from None
    return target
