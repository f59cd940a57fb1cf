"""Compile options for the nets, chosen per `jax.jit` (never through the process-wide XLA_FLAGS).

On CPU the default `taps` lowering makes every conv a 2-D one. "xla" (the default here) runs
them on XLA's own kernels (Eigen's 2-D convolution), which measured fastest for the whole
nets (BENCHMARKS.md), and leaves reductions to YNNPACK: XLA's own reduction over the leading
axes (BatchNorm's statistics in training, a depthwise kernel's gradient) is 9x slower
("xla-only" keeps every op on XLA's kernels, for comparison). "ynnpack" hands the convolutions, the matmuls and the elementwise work
after them to XLA's YNNPACK fusions, so a conv, the sum of its time taps, its bias and ReLU
run as one YNNPACK graph: faster on r3d's 56x56 stage, slower on the (2+1)D net. "default"
is jaxlib's own choice (in 0.10.2: YNNPACK for lone 2-D convolutions, XLA for the rest),
slower than both. Other backends get no options.

    forward = jax.jit(model.apply, compiler_options=stres_jax.compiler_options())
"""
import functools
import warnings

import jax
import numpy as np

CPU_LIBRARIES = {
    "ynnpack": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE"},
    "default": {},
    "xla": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"},
    "xla-only": {"xla_cpu_experimental_ynn_fusion_type": ""},
}
DEFAULT_CPU_LIBRARY = "xla"


def compiler_options(cpu_library=DEFAULT_CPU_LIBRARY, backend=None):
    """The `compiler_options` for `jax.jit` on `backend` (default: JAX's default backend)."""
    if cpu_library not in CPU_LIBRARIES:
        raise ValueError(f"unknown cpu_library {cpu_library!r}; choose one of {sorted(CPU_LIBRARIES)}")
    options = CPU_LIBRARIES[cpu_library]
    if (backend or jax.default_backend()) != "cpu" or not options:
        return {}
    if not _compiles_with(tuple(options.items())):
        warnings.warn(f"this jaxlib does not accept {sorted(options)}; using XLA's own CPU kernels")
        return {}
    return dict(options)


@functools.cache
def _compiles_with(items):
    """Whether this jaxlib's XLA knows the options (they are experimental and may be renamed)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=dict(items)).lower(np.zeros(2, np.float32)).compile()
    except Exception:  # noqa: BLE001 (XLA reports an unknown option as a runtime error)
        return False
    return True


def use_compilation_cache():
    """Keep compiled programs under `<cache>/jax` (`cache.cache_dir`) so a command's second run
    skips most of its compile (unless JAX_COMPILATION_CACHE_DIR already names a place)."""
    import os

    import jax

    from stres_jax.cache import cache_dir
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
