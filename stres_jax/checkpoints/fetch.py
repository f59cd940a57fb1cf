"""Download the published checkpoints (torchvision's, ig65m-pytorch's): sha256-checked, atomic, cached."""
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from stres_jax.runtime.atomic import atomic_path
from stres_jax.cache import cache_dir
from stres_jax.errors import UserError

PUBLISHED_FILES = {
    "r3d_18": "r3d_18-b3b3357e.pth",
    "mc3_18": "mc3_18-a90a0ba3.pth",
    "r2plus1d_18": "r2plus1d_18-91a641e6.pth",
    "r2plus1d_34_8_ig65m": "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth",
    "r2plus1d_34_8_kinetics": "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth",
    "r2plus1d_34_32_ig65m": "r2plus1d_34_clip32_ig65m_from_scratch-449a7af9.pth",
    "r2plus1d_34_32_kinetics": "r2plus1d_34_clip32_ft_kinetics_from_ig65m-ade133f1.pth",
}
PUBLISHERS = {  # who publishes an arch's file, and where
    "torchvision": "https://download.pytorch.org/models",
    "ig65m-pytorch": "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0",
}
BASE_URL_ENV = "STRES_JAX_WEIGHTS_URL"  # a mirror of every file, or a local server in tests


class FetchError(UserError, RuntimeError):
    """A download that failed or did not verify."""


def publisher(arch):
    """The name of who published `arch`'s weights (a key of PUBLISHERS)."""
    return "ig65m-pytorch" if "ig65m" in arch or "kinetics" in arch else "torchvision"


def published_file(arch):
    """The published file's name for `arch`, or a FetchError for an arch nobody publishes."""
    if arch not in PUBLISHED_FILES:
        raise FetchError(f"no published weights for {arch} (nets with weights: {', '.join(PUBLISHED_FILES)}); "
                         "train it from scratch (config.from_scratch / --random-init) or name a checkpoint")
    return PUBLISHED_FILES[arch]


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
    """`path` if it is the published file for `arch` (by its sha256 prefix), else FetchError."""
    filename = published_file(arch)
    prefix = expected_sha256_prefix(filename)
    if Path(path).is_dir():
        if not (Path(path) / filename).is_file():
            raise FetchError(f"{path}: a folder without {filename}; pass the published file itself: --from FILE.pth")
        path = Path(path) / filename
    if not Path(path).is_file():
        raise FetchError(f"{path}: no such file")
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        raise FetchError(f"{path}: sha256 {digest[:8]}... is not that of {publisher(arch)}'s {filename}; "
                         "convert other files to a directory of your choice instead")
    return Path(path)


def download_published(arch, base_url=None, progress=None, timeout=60):
    """Path of the published file for `arch`, downloaded into the cache if needed."""
    filename = published_file(arch)
    prefix = expected_sha256_prefix(filename)
    target = cache_dir() / publisher(arch) / filename
    if target.is_file() and sha256_file(target).startswith(prefix):
        return target
    base_url = base_url or os.environ.get(BASE_URL_ENV, PUBLISHERS[publisher(arch)])
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
