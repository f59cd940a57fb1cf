"""The fast lowerings (stres_jax.models.fast_conv) against flax's nn.Conv, and the CPU library choice."""
import flax.linen as nn
import jax
import numpy as np
import pytest

import stres_jax


@pytest.mark.parametrize("kernel,strides,padding", [
    ((3, 1, 1), (1, 1, 1), ((1, 1), (0, 0), (0, 0))), ((3, 1, 1), (2, 1, 1), ((1, 1), (0, 0), (0, 0))),
    ((3, 1, 1), (2, 1, 1), "VALID"), ((3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1))),
    ((1, 1, 1), (2, 2, 2), "VALID"), ((3, 7, 7), (1, 2, 2), ((1, 1), (3, 3), (3, 3)))])
def test_tap_conv_equals_flax_conv(kernel, strides, padding):
    """Every TapConv lowering (time-pixel 2-D conv for kt x 1 x 1, strided subsample for 1x1x1,
    sum of taps otherwise) on odd sizes, and its gradients."""
    from stres_jax.models.fast_conv import TapConv
    x = jax.random.normal(jax.random.key(0), (2, 5, 9, 7, 3))
    reference = nn.Conv(4, kernel, strides, padding, use_bias=True, precision="highest")
    variables = reference.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda v: v + 0.5, variables)  # a nonzero bias
    taps = TapConv(4, kernel, strides, padding, use_bias=True)
    np.testing.assert_allclose(taps.apply(variables, x), reference.apply(variables, x), rtol=1e-5, atol=1e-5)

    def grads(module):
        return jax.grad(lambda v, x: jax.numpy.sum(jax.numpy.sin(module.apply(v, x))), argnums=(0, 1))(variables, x)
    for ours, theirs in zip(jax.tree.leaves(grads(taps)), jax.tree.leaves(grads(reference))):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_default_lowering_is_explicit():
    import flax.linen as nn
    from stres_jax.models import create_model
    from stres_jax.models import onednn
    from stres_jax.models.conv_impls import OneDNNConv
    from stres_jax.models.fast_conv import TapConv
    expected = (OneDNNConv if onednn.available() else TapConv) if jax.default_backend() == "cpu" else nn.Conv
    assert create_model("r3d_18").conv.func is expected
    assert create_model("r3d_18", conv_impl="xla").conv.func is nn.Conv
    with pytest.raises(ValueError, match="unknown conv implementation"):
        create_model("r3d_18", conv_impl="fft")
    folded = create_model("r3d_18", fold_batchnorm=True)
    variables = folded.init(jax.random.key(0), np.zeros((1, 2, 16, 16, 3), np.float32))
    assert set(variables) == {"params"} and "bias" in variables["params"]["stem"]["conv"]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU library choice")
def test_cpu_library_choice_reaches_the_compiler():
    """"xla-only" keeps XLA's own kernels; "xla" (the default) hands YNNPACK only the reductions
    (here the global average pool, with what YNNPACK fuses into it); "ynnpack" fuses each conv with
    the work after it into one YNNPACK graph; "default" (jaxlib's choice) puts lone convolutions into YNNPACK."""
    model = stres_jax.create_model("mc3_18", conv_impl="taps", fold_batchnorm=True)  # XLA's own convolutions
    x = np.zeros((1, 4, 32, 32, 3), np.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)

    def compiled(library):
        jitted = jax.jit(model.apply, compiler_options=stres_jax.compiler_options(library))
        return jitted.lower(variables, x).compile().as_text()
    ynnpack, default = compiled("ynnpack"), compiled("default")
    assert stres_jax.compiler_options() == stres_jax.compiler_options("xla")
    assert "__ynn_fusion" not in compiled("xla-only")
    reductions = [line for line in compiled("xla").splitlines() if "__ynn_fusion" in line]
    assert len(reductions) == 1 and "= f32[1,512]" in reductions[0], reductions  # the pooled features
    assert ynnpack.count("__ynn_fusion") < default.count("__ynn_fusion")  # convs merged with their taps' sum
    assert stres_jax.compiler_options("ynnpack", backend="gpu") == {}
    with pytest.raises(ValueError, match="unknown cpu_library"):
        stres_jax.compiler_options("mkl")
