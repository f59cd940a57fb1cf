"""Shared fixtures. torch is imported only by the fixtures that build torchvision's models."""
import gc
import os
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """Each xdist worker runs many modules, and every compiled net stayed in it: workers reached
    8.5 GB, and with a test's own training processes one was killed for memory (24 GB machine)."""
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent compilation cache per test process and the commands it starts, in the
    session's temporary folder (not the user's ~/.cache, which the CLI would use)."""
    import jax
    path = str(tmp_path_factory.mktemp("jax-cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["STRES_JAX_CACHE"] = str(tmp_path_factory.mktemp("stres-jax-cache"))
    from stres_jax.models import onednn
    onednn.status()  # build the oneDNN extension now, so no command a test runs prints that it builds
    jax.config.update("jax_compilation_cache_dir", path)
    yield path


def fresh_cache(tmp_path):
    """An empty stres_jax cache folder (no checkpoints) for `STRES_JAX_CACHE`, sharing the session's
    compiled oneDNN extension so that nothing is built again."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "native").symlink_to(Path(os.environ["STRES_JAX_CACHE"]) / "native", target_is_directory=True)
    return cache


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """`fresh_cache` set as this test's `STRES_JAX_CACHE`."""
    cache = fresh_cache(tmp_path)
    monkeypatch.setenv("STRES_JAX_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def torch_models():
    """One random torchvision model per arch, shared by the session."""
    from tests.torch_reference import random_torchvision_model
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = random_torchvision_model(arch)
        return cache[arch]
    return get


@pytest.fixture(scope="session")
def converted(torch_models, tmp_path_factory):
    """`converted(arch, legacy=False)` -> checkpoint dir converted from torchvision's saved file."""
    from stres_jax.convert import convert_file
    from tests.torch_reference import save_state_dict
    cache = {}

    def get(arch, legacy=False):
        if (arch, legacy) not in cache:
            root = tmp_path_factory.mktemp(f"{arch}-{'legacy' if legacy else 'zip'}")
            pth = save_state_dict(torch_models(arch), root / f"{arch}.pth", legacy)
            cache[(arch, legacy)] = convert_file(pth, arch, root / "ckpt")
        return cache[(arch, legacy)]
    return get


@pytest.fixture(scope="session")
def clips():
    """Two random normalised clips, (2, 16, 112, 112, 3) float32."""
    return np.random.default_rng(0).standard_normal((2, 16, 112, 112, 3)).astype(np.float32)
