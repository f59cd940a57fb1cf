"""Nothing a user has is lost or read out of bounds (issue 42): every defect found by a hostile user,
through the CLI in a subprocess; each checks the exit status, one line and no traceback, and that
the user's files are untouched."""
import concurrent.futures
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.crafted_pth import crafted
from tests.video_files import moving_frames, write_video

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "stres_jax.cli"]
MODEL = ["--random-init", "--arch", "r3d_18"]


def run(args, cwd, limit_gb=None, env=None, timeout=300):
    """`args` in a subprocess, under `ulimit -v` when `limit_gb` is given."""
    if limit_gb:
        args = ["sh", "-c", f"ulimit -v {int(limit_gb * 2**20)} && exec \"$@\"", "sh", *map(str, args)]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def refused(result, *words):
    """Exit status 2, one line on stderr holding `words`, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def in_parallel(calls):
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda call: call(), calls))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "v6.mp4", moving_frames(30, 32, 32, seed=6), fps=10)
    write_video(folder / "v7.mp4", moving_frames(40, 32, 32, seed=7), fps=10)
    return folder


def test_outputs_never_replace_what_stres_jax_did_not_write(tmp_path, videos):
    user = tmp_path / "d"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    video = str(videos / "v6.mp4")
    (tmp_path / "x.pth").write_bytes(b"not read: the output is refused first")
    (tmp_path / "x.onnx").write_bytes(b"not read either")
    commands = [["embed", video, "--out", "d", *MODEL], ["export-onnx", *MODEL, "--out", "d"],
                ["export-jax", *MODEL, "--out", "d"], ["explain", video, *MODEL, "--out", "d"],
                ["predict", video, "--window", "4", "--plot", "d", *MODEL], ["show-filters", *MODEL, "--out", "d"],
                ["info", "r3d_18", "--graphic", "d"],
                ["convert", "--checkpoint", "x.pth", "--arch", "r3d_18", "--out", "d"],
                ["fetch", "r3d_18", "--from", "x.pth", "--out", "d"], ["import-onnx", "x.onnx", "--out", "d"]]
    calls = [lambda c=c: run([*CLI, *c], tmp_path) for c in commands]
    calls.append(lambda: run([sys.executable, str(REPO / "convert_weights.py"), "--checkpoint", "x.pth",
                              "--arch", "r3d_18", "--out", "d"], tmp_path))
    calls += [lambda: run([*CLI, "convert", "--checkpoint", "x.pth", "--arch", "r3d_18", "--out", "."], tmp_path),
              lambda: run([*CLI, "embed", video, "--out", video, *MODEL], tmp_path),
              lambda: run([*CLI, "features", video, "--out", ".", *MODEL], tmp_path),
              lambda: run([*CLI, "convert", "--checkpoint", "x.pth", "--arch", "r3d_18", "--out", str(Path.home())],
                          tmp_path)]
    results = in_parallel(calls)
    for result in results[:11]:
        refused(result, str(user))
    refused(results[11], "is the current folder")
    refused(results[12], "is the input")
    refused(results[13], "is the current folder")
    refused(results[14], "your home folder")
    assert [p.name for p in user.iterdir()] == ["notes.txt"] and (user / "notes.txt").read_text() == "keep"

    (tmp_path / "mine.png").write_bytes(b"a user's picture")
    stale = tmp_path / ".f.png.partial-00000000-999999.png"  # another host's: kept
    from stres_jax.runtime.atomic import HOST
    dead = tmp_path / f".f.png.partial-{HOST}-999999.png"  # this host's, its process gone: removed
    stale.write_bytes(b"x")
    dead.write_bytes(b"x")
    refused(run([*CLI, "show-filters", *MODEL, "--out", "mine.png"], tmp_path), "--overwrite")
    assert (tmp_path / "mine.png").read_bytes() == b"a user's picture"
    for extra in ([], [], ["--overwrite"]):  # a new file, its own result again, a user file replaced on request
        out = "f.png" if len(extra) == 0 else "mine.png"
        assert run([*CLI, "show-filters", *MODEL, "--out", out, *extra], tmp_path).returncode == 0
    assert (tmp_path / "mine.png").read_bytes()[:4] == b"\x89PNG" and not dead.exists() and stale.exists()


def mc3_shapes():
    import jax
    from stres_jax.checkpoints.key_table import flax_to_torch
    from stres_jax.models import create_model
    from stres_jax.models.init import abstract_variables
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, np.float32), abstract_variables(create_model("mc3_18")))
    return {key: tuple(value.shape) for key, value in flax_to_torch(zeros, "mc3_18").items()}


def test_crafted_checkpoints_and_metadata_are_refused_in_one_line(tmp_path):
    files = crafted(tmp_path, mc3_shapes())
    calls = [lambda p=p: run([sys.executable, str(REPO / "convert_weights.py"), "--checkpoint", str(p), "--arch",
                              "mc3_18", "--out", str(tmp_path / f"out-{p.stem}")], tmp_path, limit_gb=4)
             for p in files.values()]
    bad = {"unknown-arch": {"arch": "r50"}, "list": [], "few-labels": {"labels": ["a"]},
           "negative-classes": {"num_classes": -3}, "labels-not-text": {"labels": [1] * 400},
           "clip-len": {"clip_len": 10**9}, "arch-not-text": {"arch": ["r3d_18"]}}
    good = {"format": "stres_jax-hub-1", "arch": "r3d_18", "num_classes": 400, "labels": [f"c{i}" for i in range(400)],
            "clip_len": 16, "library": "stres_jax"}
    folders = []
    for name, change in bad.items():
        for kind, file, base in (("hub", "config.json", good), ("orbax", "meta.json", {**good, "format_version": 1})):
            folder = tmp_path / f"{kind}-{name}"
            (folder / "variables").mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"") if kind == "hub" else None
            (folder / file).write_text(json.dumps(change if isinstance(change, list) else {**base, **change}))
            folders.append((folder, file))
    calls += [lambda f=f: run([*CLI, "info", str(f)], tmp_path) for f, _ in folders]
    results = in_parallel(calls)
    for (name, path), result in zip(files.items(), results):
        refused(result, str(path))
        assert not (tmp_path / f"out-{path.stem}").exists(), name
    for (folder, file), result in zip(folders, results[len(files):]):
        refused(result, str(folder / file))


def features(sources, out, *extra):
    return [*CLI, "features", *sources, "--out", str(out), *MODEL, "--clip-len", "4", "--batch-size", "4",
            "--workers", "1", "--fps", "5", *extra]


def test_features_keep_every_entry(tmp_path, videos):
    v6, v7 = videos / "v6.mp4", videos / "v7.mp4"
    bad_name = tmp_path / os.fsdecode(b"bad\xff.mp4")
    shutil.copy(v6, bad_name)
    (tmp_path / "link.mp4").symlink_to(v7)
    out = tmp_path / "o"
    out.mkdir()
    (out / "index-notes.jsonl").write_text("a user's file\n")
    first = run(features([str(v7), str(v7), str(tmp_path / "link.mp4"), str(v6)], out), tmp_path)
    assert first.returncode == 0 and "named more than once, computed once" in first.stderr, first.stderr[-2000:]
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["video"] for r in index] == [str(v7), str(v6)]
    from stres_jax.features import open_features
    arrays = open_features(out)  # every window computed once: none left as zeros
    assert arrays.complete and all(np.abs(arrays[str(v)]["features"]).sum(axis=1).min() > 0 for v in (v6, v7))

    broken = tmp_path / "later.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    second = run(features([str(broken), str(bad_name)], out), tmp_path)
    assert second.returncode == 1 and "later.mp4" in second.stderr and "Traceback" not in second.stderr
    shutil.copy(v6, broken)  # the user fixes the video: the rerun retries it
    third = run(features([str(broken), str(bad_name)], out), tmp_path)
    assert third.returncode == 0, third.stderr[-2000:]
    index = {r["video"]: r for r in map(json.loads, (out / "index.jsonl").read_text().splitlines())}
    assert set(index) == {str(v7), str(v6), str(broken), str(bad_name)} and not any("error" in r for r in index.values())
    assert (out / "index-notes.jsonl").read_text() == "a user's file\n"

    long_video = tmp_path / "long.mp4"
    write_video(long_video, moving_frames(600, 32, 32), fps=25)
    busy = subprocess.Popen(features([str(long_video)], tmp_path / "busy", "--fps", "0"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "busy" / ".stres_jax" / "state.json").exists():
            time.sleep(0.1)
        refused(run(features([str(v6)], tmp_path / "busy", "--fps", "0"), tmp_path), "another features run")
        with pytest.raises(Exception, match="unfinished features run"):
            open_features(tmp_path / "busy")
        assert open_features(tmp_path / "busy", partial=True).complete is False
    finally:
        busy.send_signal(signal.SIGTERM)
        busy.communicate(timeout=300)


def test_options_are_bounded_before_any_video_is_opened(tmp_path, videos):
    video = str(videos / "v6.mp4")
    calls = [lambda e=e: run([*CLI, "features", video, "--out", "o", *MODEL, *e], tmp_path, limit_gb=4)
             for e in (["--fps", "1e9"], ["--fps", "-1"], ["--fps", "nan"], ["--clip-len", "100000"])]
    calls += [lambda: run([*CLI, "predict", video, *MODEL, "--clip-len", "100000"], tmp_path, limit_gb=4)]
    calls += [lambda k=k: run([sys.executable, "-m", "stres_jax.eval", f"--config={REPO}/configs/r2plus1d.py",
                               "--workdir", "w", "--config.random_init=True", f"--config.data.root={videos}", k],
                              tmp_path, limit_gb=4)
              for k in ("--config.protocol.frame_rate=1e9", "--config.protocol.clip_len=100000")]
    results = in_parallel(calls)
    for result in results[:5]:
        assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    refused(results[5], "protocol.frame_rate")
    refused(results[6], "protocol.clip_len")
    assert not (tmp_path / "o").exists()


def test_prepare_streams_a_long_video_and_the_store_checks_its_index(tmp_path):
    root = tmp_path / "videos" / "a"
    root.mkdir(parents=True)
    frames = moving_frames(50, 32, 32)
    write_video(root / "long.mp4", np.concatenate([frames] * 100), fps=15)  # 5,000 frames, 5.6 minutes
    result = run([*CLI, "prepare", str(root.parent), "--out", "store", "--encoding", "lossless", "--workers", "1"],
                 tmp_path, env={"STRES_JAX_DECODE_MEMORY_GB": "1"}, timeout=600)
    assert result.returncode == 0 and json.loads(result.stdout)["skipped"] == 0, result.stderr[-2000:]
    index = json.loads((tmp_path / "store" / "index.json").read_text())
    assert index["num_frames"] == [5000]
    index["first"] = [-5]
    (tmp_path / "store" / "index.json").write_text(json.dumps(index))
    refused(run([*CLI, "embed", "--store", "store", "--out", "e.npz", *MODEL], tmp_path), "index.json", "prepare it again")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_full_disk_is_one_line(tmp_path, videos, converted):
    small = tmp_path / "small"
    small.mkdir()
    pth = converted("r3d_18").parent / "r3d_18.pth"
    (tmp_path / "vids" / "a").mkdir(parents=True)
    shutil.copy(videos / "v7.mp4", tmp_path / "vids" / "a")
    commands = {
        "convert": f"{sys.executable} {REPO / 'convert_weights.py'} --checkpoint {pth} --arch r3d_18 --out {small}/ckpt",
        "features": " ".join(features([str(videos / "v7.mp4")], small / "f")),
        "prepare": " ".join([*CLI, "prepare", str(tmp_path / "vids"), "--out", str(small / "store"), "--encoding", "lossless",
                             "--workers", "1"]),
    }
    for name, command in commands.items():
        size = "200k" if name == "convert" else "24k"
        script = f"mount -t tmpfs -o size={size} tmpfs {small} && cd {tmp_path} && {command}"
        result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = [line for line in result.stderr.splitlines()  # progress lines (no terminal) aside
                 if line.strip() and not re.match(r"\d\d:\d\d:\d\d (features|prepare) ", line)]
        assert result.returncode == 2 and "Traceback" not in result.stderr, (name, result.stderr[-3000:])
        assert len(lines) == 1 and "no space left" in lines[0], (name, lines)


def test_embed_and_eval_compute_a_repeated_video_once_and_refuse_a_bad_csv_row(tmp_path, videos):
    root = tmp_path / "k400" / "abseiling"
    root.mkdir(parents=True)
    shutil.copy(videos / "v6.mp4", root / "abc_000001_000011.mp4")
    rows = "label,youtube_id,time_start,time_end,split\n" + "abseiling,abc,1,11,val\n" * 2
    (tmp_path / "rows.csv").write_text(rows)
    (tmp_path / "bad.csv").write_text(rows + "abseiling,abc,soon,11,val\n")
    video = str(videos / "v6.mp4")
    evaluate = [sys.executable, "-m", "stres_jax.eval", f"--config={REPO}/configs/r3d.py", "--config.random_init=True",
                "--config.data.source=csv", f"--config.data.root={tmp_path / 'k400'}", "--config.protocol.clips_per_video=1",
                "--config.protocol.clip_len=4"]
    embed, good, bad = in_parallel([
        lambda: run([*CLI, "embed", video, video, "--out", "e.npz", "--clips", "1", *MODEL], tmp_path),
        lambda: run([*evaluate, f"--config.data.csv={tmp_path / 'rows.csv'}", "--workdir", "w1"], tmp_path),
        lambda: run([*evaluate, f"--config.data.csv={tmp_path / 'bad.csv'}", "--workdir", "w2"], tmp_path)])
    assert embed.returncode == 0 and "computed once" in embed.stderr, embed.stderr[-2000:]
    assert len(np.load(tmp_path / "e.npz")["paths"]) == 1
    assert good.returncode == 0 and "computed once" in good.stderr, good.stderr[-2000:]
    assert json.loads((tmp_path / "w1" / "results.json").read_text())["num_videos"] == 1
    refused(bad, "bad.csv:4", "time_start 'soon'")


def test_500_checkpoint_mutants_are_refused_or_read_as_torch_reads_them():
    result = subprocess.run([sys.executable, "-m", "tests.fuzz_checkpoints", "--count", "500"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["failures"] == [], report["failures"][:5]
    assert report["refused"] + report["converted"] == 500 and min(report["refused"], report["converted"]) > 50
