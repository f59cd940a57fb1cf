"""Download the published checkpoints (torchvision's, ig65m-pytorch's, mmaction2's CSN nets):
sha256-checked, atomic, cached."""
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
# mmaction2's CSN checkpoints (configs/recognition/csn/metafile.yml): name -> (arch, path under its
# download site, preset, Kinetics-400 top-1 / top-5 as published, config). The ig65m-pretrained
# configs normalise with the base config's ImageNet mean and std; the sports1m and from-scratch
# (VMZ) ones with their own.
_V1, _VMZ = "v1.0/recognition/csn", "recognition/csn/vmz"
CSN_CHECKPOINTS = {
    "ir_csn_152_ig65m_kinetics": ("ir_csn_152", f"{_V1}/ircsn_ig65m-pretrained-r152_8xb12-32x2x1-58e_kinetics400-rgb/"
                                  "ircsn_ig65m-pretrained-r152_8xb12-32x2x1-58e_kinetics400-rgb_20220811-c7a3cc5b.pth",
                                  "ig65m", (82.87, 95.90)),
    "ir_csn_152_ig65m_kinetics_bnfrozen": ("ir_csn_152", f"{_V1}/ircsn_ig65m-pretrained-r152-bnfrozen_8xb12-32x2x1-58e_"
                                           "kinetics400-rgb/ircsn_ig65m-pretrained-r152-bnfrozen_8xb12-32x2x1-58e_"
                                           "kinetics400-rgb_20220811-7d1dacde.pth", "ig65m", (82.84, 95.92)),
    "ir_csn_50_ig65m_kinetics_bnfrozen": ("ir_csn_50", f"{_V1}/ircsn_ig65m-pretrained-r50-bnfrozen_8xb12-32x2x1-58e_"
                                          "kinetics400-rgb/ircsn_ig65m-pretrained-r50-bnfrozen_8xb12-32x2x1-58e_"
                                          "kinetics400-rgb_20220811-44395bae.pth", "ig65m", (79.44, 94.26)),
    "ip_csn_152_ig65m_kinetics_bnfrozen": ("ip_csn_152", f"{_VMZ}/vmz_ipcsn_ig65m_pretrained_r152_32x2x1_58e_"
                                           "kinetics400_rgb_20210617-c3be9793.pth", "ig65m", (82.68, 95.69)),
    "ir_csn_152_sports1m_kinetics_bnfrozen": ("ir_csn_152", f"{_VMZ}/vmz_ircsn_sports1m_pretrained_r152_32x2x1_58e_"
                                              "kinetics400_rgb_20210617-b9b10241.pth", "vmz", (78.57, 93.44)),
    "ip_csn_152_sports1m_kinetics_bnfrozen": ("ip_csn_152", f"{_VMZ}/vmz_ipcsn_sports1m_pretrained_r152_32x2x1_58e_"
                                              "kinetics400_rgb_20210617-3367437a.pth", "vmz", (79.07, 93.82)),
    "ir_csn_152_kinetics": ("ir_csn_152", f"{_VMZ}/vmz_ircsn_from_scratch_r152_32x2x1_180e_kinetics400_rgb_"
                            "20210617-5c933ae1.pth", "vmz", (76.53, 92.28)),
    "ip_csn_152_kinetics": ("ip_csn_152", f"{_VMZ}/vmz_ipcsn_from_scratch_r152_32x2x1_180e_kinetics400_rgb_"
                            "20210617-d565828d.pth", "vmz", (77.80, 93.10)),
}
CSN_DEFAULTS = {"ir_csn_152": "ir_csn_152_ig65m_kinetics", "ip_csn_152": "ip_csn_152_ig65m_kinetics_bnfrozen",
                "ir_csn_50": "ir_csn_50_ig65m_kinetics_bnfrozen"}  # what `fetch ARCH` brings
PUBLISHED_FILES.update({name: path for name, (_, path, _, _) in CSN_CHECKPOINTS.items()})
PUBLISHED_FILES.update({arch: PUBLISHED_FILES[name] for arch, name in CSN_DEFAULTS.items()})
PUBLISHERS = {  # who publishes an arch's file, and where
    "torchvision": "https://download.pytorch.org/models",
    "ig65m-pytorch": "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0",
    "mmaction2": "https://download.openmmlab.com/mmaction",
}
BASE_URL_ENV = "STRES_JAX_WEIGHTS_URL"  # a mirror of every file, or a local server in tests


class FetchError(UserError, RuntimeError):
    """A download that failed or did not verify."""


def publisher(arch):
    """The name of who published `arch`'s weights (a key of PUBLISHERS)."""
    if "csn" in arch:
        return "mmaction2"
    return "ig65m-pytorch" if "ig65m" in arch or "kinetics" in arch else "torchvision"


def published_arch(name):
    """The arch of a published checkpoint's name (an arch names its own), or None."""
    if name in CSN_CHECKPOINTS:
        return CSN_CHECKPOINTS[name][0]
    return name if name in PUBLISHED_FILES else None


def published_preset(name):
    """The test protocol of a published checkpoint (None: its arch's)."""
    from stres_jax.models.preset import CSN_IG65M, CSN_VMZ
    name = CSN_DEFAULTS.get(name, name)
    return {"ig65m": CSN_IG65M, "vmz": CSN_VMZ}[CSN_CHECKPOINTS[name][2]] if name in CSN_CHECKPOINTS else None


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
    filename = Path(published_file(arch)).name
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
    relative = published_file(arch)  # mmaction2's sit in their own folders on its site
    filename = Path(relative).name
    prefix = expected_sha256_prefix(filename)
    target = cache_dir() / publisher(arch) / filename
    if target.is_file() and sha256_file(target).startswith(prefix):
        return target
    base_url = base_url or os.environ.get(BASE_URL_ENV, PUBLISHERS[publisher(arch)])
    url = f"{base_url.rstrip('/')}/{relative}"
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
