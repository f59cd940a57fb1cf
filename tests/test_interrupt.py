"""Ctrl-C as a shell sends it (SIGINT to the whole process group, at its default disposition):
`features` says at once that it stops after the batch in flight and that Ctrl-C again stops now,
ends within a bound with every finished video kept and the command that resumes; a second
Ctrl-C ends it at once, leaving no staging file. Measured on 2 cores: the line 0.00-0.03 s after
the signal, the exit 1.9-2.0 s after it, 0.15 s after a second Ctrl-C; the bounds below leave
room for a loaded CI machine."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np

from stres_jax.features import open_features

REPO = Path(__file__).resolve().parent.parent
MESSAGE_BOUND, EXIT_BOUND, SECOND_BOUND = 2.0, 20.0, 5.0  # seconds after the signal


def write_video(path, frames, size=(64, 48)):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), (i * 7) % 256, np.uint8)
            image[:, : (i % size[0])] = 255 - image[0, 0]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


class Watched:
    """A features run in its own process group; its stderr lines with the time each arrived."""

    def __init__(self, videos, out):
        command = [sys.executable, "-m", "stres_jax.cli", "features", *map(str, videos), "--out", str(out),
                   "--random-init", "--arch", "r3d_18", "--clip-len", "4", "--batch-size", "2", "--workers", "2"]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, start_new_session=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line))

    def interrupt(self):
        os.killpg(self.process.pid, signal.SIGINT)
        return time.monotonic()

    def line_with(self, text, deadline=60):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            found = [(t, line) for t, line in self.lines if text in line]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no {text!r} in {''.join(line for _, line in self.lines)[-2000:]}")

    def wait(self):
        self.process.wait(timeout=120)
        ended = time.monotonic()
        self.reader.join(timeout=10)
        return ended, "".join(line for _, line in self.lines)


def wait_for(condition, seconds=300):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not condition():
        time.sleep(0.05)
    assert condition()


def test_ctrl_c_is_prompt_keeps_finished_videos_and_a_second_one_ends_at_once(tmp_path):
    short, long = tmp_path / "short.mp4", tmp_path / "long.mp4"
    write_video(short, 30)
    write_video(long, 1500)  # 60 s: about 225 windows, far more than the run is given
    out = tmp_path / "out"
    run = Watched([long, short], out)
    wait_for(lambda: any(out.glob("short-*.npy")))  # the short video is finished; the long one computes
    sent = run.interrupt()
    said, line = run.line_with("Ctrl-C again")
    ended, stderr = run.wait()
    assert said - sent < MESSAGE_BOUND and "stopping after the batch in flight" in line, stderr
    assert ended - sent < EXIT_BOUND, (ended - sent, stderr)
    assert run.process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "to finish, run the same command again: stres-jax features" in stderr
    kept = open_features(out, partial=True)
    assert [Path(key).name for key in kept] == ["short.mp4"] and len(kept[0]["features"]) == 4  # 30 frames at 25 fps: 18 at 15 fps, 4 windows of 4
    assert not list(out.glob(".*partial*")) and not list(out.glob("long-*"))

    again = Watched([long, short], out)  # the rerun: twice Ctrl-C
    lock = out / ".stres_jax" / "lock-00000"
    wait_for(lambda: lock.read_text() == f"pid {again.process.pid}")  # it holds the folder: its loop is next
    time.sleep(1.0)
    again.interrupt()
    again.line_with("Ctrl-C again")
    second = again.interrupt()
    ended, stderr = again.wait()
    assert again.process.returncode == 130 and ended - second < SECOND_BOUND, (ended - second, stderr)
    assert "stopped now" in stderr and "Traceback" not in stderr, stderr
    assert not list(out.glob(".*partial*")) and [Path(k).name for k in open_features(out, partial=True)] == ["short.mp4"]
    group = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True).stdout.splitlines()
    assert not [p for p in group if p.split()[0] == str(again.process.pid) and "<defunct>" not in p]  # no decoder runs on
