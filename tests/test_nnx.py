"""The NNX nets against torchvision (logits, float64 gradients, an SGD step and BatchNorm's
statistics), against the linen nets on the same weights, and the Hub-layout folder both APIs
read and write, including `hf://` from a Hub cache laid out here (offline)."""
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx, traverse_util
from safetensors.numpy import load_file

import stres_jax
import stres_jax.nnx as snnx
from stres_jax.checkpoints.key_table import torch_to_flax
from stres_jax.models.init import abstract_variables
from stres_jax.train import sgd
from tests.test_train_step import LR, MOMENTUM, TOLERANCE, WEIGHT_DECAY, relative, torch_steps
from tests.torch_reference import ARCHS, random_torchvision_model, relative_error, torch_forward


def split_jit(model):
    """The documented fast call: split once, jit a pure function of the state."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x), compiler_options=stres_jax.compiler_options())
    return lambda x: forward(state, x)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_torchvision_and_linen_folded_or_not(arch, converted, torch_models):
    clips = np.random.default_rng(0).standard_normal((2, 8, 64, 64, 3)).astype(np.float32)
    reference, _ = torch_forward(torch_models(arch), clips)
    for fold in (False, True):
        model = snnx.from_pretrained(str(converted(arch)), fold_batchnorm=fold)
        assert model.fc.kernel[...].shape == (512, 400)
        logits = split_jit(model)(clips)
        linen, variables, _ = stres_jax.load_checkpoint(converted(arch), fold_batchnorm=fold)
        assert relative_error(logits, reference) < 1e-5, (arch, fold)
        assert relative_error(logits, stres_jax.jit_apply(linen)(variables, clips)) < 1e-5
        np.testing.assert_array_equal(snnx.variables_of(model)["params"]["fc"]["kernel"],
                                      variables["params"]["fc"]["kernel"])


def test_save_pretrained_round_trip_in_nnx_and_linen(converted, tmp_path, monkeypatch):
    clips = np.random.default_rng(1).standard_normal((1, 4, 48, 48, 3)).astype(np.float32)
    draws = []  # from_pretrained builds shapes only (nnx.eval_shape): random weights are traced, never drawn
    normal = jax.random.normal
    monkeypatch.setattr(jax.random, "normal", lambda key, *a, **k: (
        isinstance(key, jax.core.Tracer) or draws.append(key)) and None or normal(key, *a, **k))
    model = snnx.from_pretrained(str(converted("r3d_18")))
    assert draws == [] and all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(nnx.state(model)))
    snnx.create_model("r3d_18")
    assert len(draws) > 10  # the counter sees create_model's random initialisation
    monkeypatch.undo()
    expected = split_jit(model)(clips)
    snnx.save_pretrained(model, tmp_path / "hub")
    flat = load_file(str(tmp_path / "hub" / "model.safetensors"))  # the documented names
    assert flat["params.stem.conv.kernel"].shape == (3, 7, 7, 3, 64)
    assert flat["params.fc.kernel"].shape == (512, 400) and "batch_stats.layer1_0.bn1.var" in flat
    linen, variables, meta = stres_jax.load_checkpoint(tmp_path / "hub")
    assert meta["arch"] == "r3d_18" and len(meta["labels"]) == 400
    assert relative_error(stres_jax.jit_apply(linen)(variables, clips), expected) < 1e-6
    assert relative_error(split_jit(snnx.from_pretrained(str(tmp_path / "hub")))(clips), expected) < 1e-6
    # the linen side writes the same folder, folded: loading it gives a folded net in both APIs
    _, folded, meta = stres_jax.load_checkpoint(converted("r3d_18"), fold_batchnorm=True)
    stres_jax.save_pretrained(folded, meta, tmp_path / "folded")
    again = snnx.from_pretrained(str(tmp_path / "folded"))
    assert again.options.fold_batchnorm and "batch_stats" not in snnx.variables_of(again)
    assert relative_error(split_jit(again)(clips), expected) < 1e-5
    assert stres_jax.load_checkpoint(tmp_path / "folded")[0].fold_batchnorm
    from stres_jax.cli import main  # the CLI writes the same folder straight from the .pth
    pth = Path(converted("r3d_18")).parent / "r3d_18.pth"
    assert main(["convert", "--arch", "r3d_18", "--checkpoint", str(pth), "--out", str(tmp_path / "cli"),
                 "--format", "safetensors"]) == 0
    assert relative_error(split_jit(snnx.from_pretrained(str(tmp_path / "cli")))(clips), expected) < 1e-6


def test_hf_names_read_a_hub_cache_offline(converted, tmp_path, monkeypatch, capsys):
    """`hf://owner/repo` through huggingface_hub's own cache layout, HF_HUB_OFFLINE=1."""
    snapshot = tmp_path / "hf" / "hub" / "models--stres--mc3" / "snapshots" / ("0" * 40)
    snnx.save_pretrained(snnx.from_pretrained(str(converted("mc3_18"))), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = snnx.from_pretrained("hf://stres/mc3")
    assert model.arch == "mc3_18" and len(model.labels) == 400
    from stres_jax.cli import main
    assert main(["info", "hf://stres/other"]) == 2  # not cached, offline: one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hf://stres/other: not on the Hub or in its cache" in err


def test_float64_gradients_sgd_step_and_batchnorm_statistics_equal_torch():
    arch = "r2plus1d_18"
    rng = np.random.default_rng(4)
    clips, labels = rng.standard_normal((2, 4, 32, 32, 3)), rng.integers(0, 400, 2)
    reference = random_torchvision_model(arch).double().train()
    start = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    loss = torch.nn.functional.cross_entropy(reference(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)),
                                             torch.from_numpy(labels))
    loss.backward()
    torch_grads = {k: (p.grad.numpy() if p.grad is not None else None) for k, p in reference.named_parameters()}
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
    _, torch_states = torch_steps(reference, [(clips, labels)])
    with jax.enable_x64(True):
        abstract = abstract_variables(stres_jax.create_model(arch))
        model = snnx.create_model(arch, conv_impl="taps", dtype=jnp.float64)
        snnx.load_variables(model, torch_to_flax(start, arch, abstract, dtype=np.float64))
        model.train()
        gradients = nnx.jit(lambda m, x, y: nnx.value_and_grad(snnx.loss_and_logits, has_aux=True)(m, x, y))
        (ours_loss, _), grads = gradients(model, jnp.asarray(clips), jnp.asarray(labels))
        assert abs(float(ours_loss) - loss.item()) / abs(loss.item()) < TOLERANCE
        expected = torch_to_flax({**start, **torch_grads}, arch, abstract, dtype=np.float64)["params"]
        ours = traverse_util.flatten_dict(nnx.to_pure_dict(grads))
        errors = {"/".join(k): relative(ours[k], v) for k, v in traverse_util.flatten_dict(expected).items()}
        worst = max(errors, key=errors.get)
        assert errors[worst] < TOLERANCE, (worst, errors[worst])

        model = snnx.create_model(arch, conv_impl="taps", dtype=jnp.float64)
        snnx.load_variables(model, torch_to_flax(start, arch, abstract, dtype=np.float64))
        model.train()
        optimizer = nnx.Optimizer(model, sgd(LR, MOMENTUM, WEIGHT_DECAY), wrt=nnx.Param)
        snnx.train_step(model, optimizer, jnp.asarray(clips), jnp.asarray(labels))
        after = traverse_util.flatten_dict(snnx.variables_of(model))
        theirs = traverse_util.flatten_dict(torch_to_flax(torch_states[1], arch, abstract, dtype=np.float64))
        before = traverse_util.flatten_dict(torch_to_flax(start, arch, abstract, dtype=np.float64))
        assert set(after) == set(theirs)  # every parameter and running statistic
        errors = {"/".join(k): relative(after[k] - before[k], theirs[k] - before[k]) for k in theirs}
        worst = max(errors, key=errors.get)
        assert errors[worst] < TOLERANCE, (worst, errors[worst])


def readme_example(name):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", readme, re.S).group(1)


def test_readme_nnx_examples_run(converted, empty_cache, capsys):
    from stres_jax.checkpoints.fetch import default_checkpoint_dir
    default_checkpoint_dir("r2plus1d_18").parent.mkdir(parents=True)
    default_checkpoint_dir("r2plus1d_18").symlink_to(converted("r2plus1d_18"))
    for name in ("nnx-finetune", "nnx-bridge"):
        namespace = {}
        exec(compile(readme_example(name), "README.md", "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"loss \d+\.\d{3}", out[0]) and re.fullmatch(r"logits \(2, 10\)", out[-1]), out
