"""The JAX side of the whole-net benchmarks: a variant's forward (LOWERING[+fold][@CPU_LIBRARY])
compiled on a clip, the linen or NNX net, and onnxruntime on our export. No torch here, so a
process measuring our memory (`peak_memory.py`) holds JAX's stack alone."""
import jax
import numpy as np

from stres_jax.models import ARCH_SPECS, create_model
from stres_jax.models.conv_impls import conv_factory
from stres_jax.models.fold import fold_batchnorm
from stres_jax.runtime.xla_options import compiler_options

DEFAULT_VARIANTS = ["xla@xla", "taps+fold@ynnpack", "taps+fold@xla"]


def parse_variant(name):
    """"taps+fold@ynnpack" -> ("taps", True, "ynnpack")."""
    lowering, _, library = name.partition("@")
    impl, _, fold = lowering.partition("+")
    if fold not in ("", "fold"):
        raise SystemExit(f"variant {name!r}: expected LOWERING[+fold][@CPU_LIBRARY]")
    return impl, fold == "fold", library or "default"


def nnx_runner(arch, variables, variant, dtype, x):
    """The NNX net's forward: "nnx-jit/VARIANT" under `nnx.jit` (the module graph walked each call;
    it takes no compiler options, so @CPU_LIBRARY is ignored), "nnx-split/VARIANT" split once and a
    pure function of the state under `jax.jit` with the variant's options (the README's)."""
    from flax import nnx
    import stres_jax.nnx as snnx
    call, variant = variant.split("/", 1)
    impl, fold, library = parse_variant(variant)
    model = snnx.create_model(arch, variables["params"]["fc"]["kernel"].shape[1], impl, dtype, fold_batchnorm=fold)
    snnx.load_variables(model, fold_batchnorm(variables, model.spec) if fold else variables)
    if call == "nnx-jit":
        forward = nnx.jit(lambda m, x: m(x))
        return lambda x: forward(model, x).block_until_ready()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x), compiler_options=compiler_options(library))
    return lambda x: forward(state, x).block_until_ready()


def jax_runner(arch, variables, variant, dtype, x):
    """The variant's forward, compiled on `x`. "onednn-reorder" is "onednn" reordering every
    kernel on each call (the inference forward otherwise keeps them in oneDNN's layout);
    "onednn-unfused" leaves bias, residual and ReLU to XLA instead of oneDNN's post-ops;
    "nnx-jit/VARIANT" and "nnx-split/VARIANT" run the NNX net (`nnx_runner`)."""
    if variant.startswith("nnx-"):
        return nnx_runner(arch, variables, variant, dtype, x)
    impl, fold, library = parse_variant(variant)
    switch = {"onednn-reorder": {"inference_target": "forward"}, "onednn-unfused": {"fuse_epilogue": False}}.get(impl)
    model = create_model(arch, num_classes=variables["params"]["fc"]["kernel"].shape[1],
                         conv=conv_factory("onednn" if switch else impl), fold_batchnorm=fold, dtype=dtype)
    variables = jax.device_put(fold_batchnorm(variables, model.spec) if fold else variables)  # as load_checkpoint
    forward = jax.jit(model.apply, compiler_options=compiler_options(library))
    if switch:
        from stres_jax.models import onednn
        with onednn.choosing(**switch):
            forward = forward.lower(variables, x).compile()  # traced now, with the switch set
    return lambda x: forward(variables, x).block_until_ready()


def onnx_runner(arch, variables):
    import onnxruntime
    from stres_jax.labels import kinetics400_labels
    from stres_jax.export.onnx_io import to_onnx
    session = onnxruntime.InferenceSession(to_onnx(arch, variables, kinetics400_labels()).SerializeToString())
    return lambda x: session.run(None, {"video": np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))})


def input_size(arch):
    """112 (torchvision's crop); 224 for the CSN nets (mmaction2's validation CenterCrop)."""
    return 224 if "csn" in arch else 112


def clip_shape(arch, batch):
    """The benchmarks' input shape: (batch, the arch's clip length, size, size, 3)."""
    size = input_size(arch)
    return (batch, ARCH_SPECS[arch].clip_len, size, size, 3)
