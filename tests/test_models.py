"""Parameter counts and shapes against torchvision; blocks compose; train mode; entry points import."""
import importlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stres_jax.checkpoints.key_table import key_table
from stres_jax.models.init import abstract_variables
from stres_jax.models import (BasicBlock, Conv2Plus1D, Conv3DNoTemporal, Conv3DSimple, R2Plus1dStem,
                              create_model)
from tests.torch_reference import ARCHS, random_torchvision_model

PUBLISHED_PARAMS = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325}


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_counts_equal_torchvision(arch):
    variables = abstract_variables(create_model(arch))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
    theirs = sum(p.numel() for p in random_torchvision_model(arch).parameters())
    assert ours == theirs == PUBLISHED_PARAMS[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_key_table_covers_every_torchvision_tensor(arch):
    state = random_torchvision_model(arch).state_dict()
    prefixes = {prefix for prefix, _, _ in key_table(arch)}
    assert {key.rsplit(".", 1)[0] for key in state} == prefixes


def test_aliases_and_unknown_arch():
    assert create_model("(2+1)D").stem is R2Plus1dStem
    assert create_model("Mixed").builders[1] is Conv3DNoTemporal
    with pytest.raises(ValueError, match="unknown architecture 'r50'"):
        create_model("r50")


def test_blocks_compose_into_a_custom_net():
    """A narrow (2+1)D net with 5 classes from the exported blocks, trained one step."""
    class TinyNet(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            norm = lambda **kw: nn.BatchNorm(use_running_average=not train, **kw)
            x = R2Plus1dStem(norm=norm)(x)
            x = BasicBlock(32, Conv2Plus1D, stride=2, norm=norm)(x)
            x = BasicBlock(48, Conv3DSimple, stride=2, norm=norm)(x)
            return nn.Dense(5)(x.mean(axis=(1, 2, 3)))

    x = jnp.ones((2, 4, 32, 32, 3))
    variables = TinyNet().init(jax.random.key(0), x)
    logits, updates = TinyNet().apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 5)
    assert variables["params"]["BasicBlock_0"]["conv1"]["spatial"]["kernel"].shape == (1, 3, 3, 64, 82)  # 64*32*27 // (64*9 + 3*32)
    assert not np.allclose(updates["batch_stats"]["BasicBlock_0"]["bn1"]["mean"], 0)


def test_train_flag_uses_batch_statistics():
    model = create_model("mc3_18", num_classes=7)
    x = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    eval_logits = model.apply(variables, x)
    train_logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert eval_logits.shape == train_logits.shape == (2, 7)
    assert not np.allclose(eval_logits, train_logits)


@pytest.mark.parametrize("module", ["stres_jax", "stres_jax.cli", "stres_jax.convert", "stres_jax.labels",
                                    "stres_jax.eval", "stres_jax.eval.program", "stres_jax.netinfo",
                                    "experiments.linear_probe", "experiments.feature_space"])
def test_entry_points_import(module):
    importlib.import_module(module)


def test_console_script_and_converter_help():
    for cmd in (["stres-jax", "--help"], [sys.executable, "convert_weights.py", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert "usage:" in out
