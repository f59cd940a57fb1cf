"""Build and load the oneDNN convolution handlers (`onednn_conv.cc`) and the depthwise kernel
gradient (`depthwise.cc`, plain C++ with OpenMP): compiled on first use with
g++ against the `onednn-cpu-gomp` wheel (the `onednn` extra) and jaxlib's FFI headers, into
`<cache>/native`, then registered with `jax.ffi.register_ffi_target` under
`stres_onednn_conv_<name>` for each of `TARGETS`. Where that cannot happen, `status()` says why."""
import ctypes
import functools
import hashlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import jax

from stres_jax.cache import cache_dir
from stres_jax.install import pip_extra

SOURCES = [Path(__file__).resolve().parent / name for name in ("onednn_conv.cc", "depthwise.cc", "materialize.cc")]
TARGETS = {"forward": "StresOnednnConvForward", "forward_reuse": "StresOnednnConvForwardReuse",
           "forward_fused": "StresOnednnConvForwardFused", "input_grad": "StresOnednnConvInputGrad",
           "kernel_grad": "StresOnednnConvKernelGrad", "depthwise_forward": "StresDepthwiseForward",
           "depthwise_kernel_grad": "StresDepthwiseKernelGrad", "materialize": "StresMaterialize"}


class OneDNNUnavailable(RuntimeError):
    """The oneDNN extension could not be built or loaded here."""


def _onednn_root():
    """The prefix whose include/ and lib/ hold the oneDNN wheels' files, or None."""
    candidates = [os.environ.get("STRES_JAX_ONEDNN_ROOT"), sysconfig.get_paths()["data"], sys.prefix,
                  sys.base_prefix, site.USER_BASE]
    for root in filter(None, candidates):
        root = Path(root)
        if (root / "include" / "oneapi" / "dnnl" / "dnnl.hpp").is_file() and any(root.glob("lib/libdnnl.so*")):
            return root
    return None


def _build(root):
    """Compile the handlers once per source, jaxlib and oneDNN install; returns the .so path."""
    include = jax.ffi.include_dir()
    sources = b"".join(source.read_bytes() for source in SOURCES)
    digest = hashlib.sha256(sources + f"{jax.__version__}|{include}|{root}".encode()).hexdigest()[:16]
    target = cache_dir() / "native" / f"onednn_conv-{digest}.so"
    if target.is_file():
        return target
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise OneDNNUnavailable("no C++ compiler (g++ or $CXX) to build it")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"stres_jax: building the oneDNN convolutions into {target.parent} (once)", file=sys.stderr, flush=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    command = [compiler, "-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w", f"-I{include}",
               f"-I{root / 'include'}", *map(str, SOURCES), f"-L{root / 'lib'}", "-ldnnl", f"-Wl,-rpath,{root / 'lib'}", "-o", str(staging)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        staging.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise OneDNNUnavailable(f"compiling {' and '.join(s.name for s in SOURCES)} failed: {last}")
    os.replace(staging, target)  # a reader never sees a half-written library
    return target


@functools.cache
def load():
    """Build (first time), load and register the handlers; (library, None) or (None, reason)."""
    if os.environ.get("STRES_JAX_DISABLE_ONEDNN"):
        return None, "disabled by STRES_JAX_DISABLE_ONEDNN"
    if sys.platform != "linux" or jax.default_backend() != "cpu":
        return None, f"oneDNN runs on Linux CPUs only (here: {sys.platform}, {jax.default_backend()})"
    root = _onednn_root()
    if root is None:
        return None, f"the oneDNN wheels are not installed: {pip_extra('onednn')}"
    try:
        library = ctypes.CDLL(str(_build(root)))
    except (OneDNNUnavailable, OSError) as err:
        return None, str(err)
    for name, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(f"stres_onednn_conv_{name}", jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    return library, None


def status():
    """(available, why): whether the oneDNN lowering can run here, and the reason if not."""
    library, reason = load()
    if library is None:
        return False, reason
    version = library.stres_onednn_version()
    return True, f"oneDNN {version // 10000}.{version // 100 % 100}.{version % 100} (built in {cache_dir() / 'native'})"


def available():
    return load()[0] is not None


@functools.cache
def cpu_flags():
    """The instruction-set flags of this CPU (/proc/cpuinfo), empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())
