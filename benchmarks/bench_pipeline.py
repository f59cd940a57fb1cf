"""Decoding + preprocessing throughput against the model's, and peak memory of windowed predict.

    python benchmarks/bench_pipeline.py --minutes 10            # makes a 720p test video first
    python benchmarks/bench_pipeline.py --video long.mp4 --skip-predict

Not a test: prints a table; numbers go in BENCHMARKS.md and the issue notes.
"""
import argparse
import os
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_video(path, minutes, fps=25, size=(720, 1280)):
    """A 720p H.264 video with moving content (ultrafast preset, so this takes minutes, not hours)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (size[0] // 8, size[1] // 4, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(texture, 8, 0), 4, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(int(minutes * 60 * fps)):
            frame = np.roll(texture, (2 * i) % size[1], axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_throughput(path, max_frames):
    from stres_jax.data.decode import iter_frames
    from stres_jax.data.transforms import resize_crop_uint8
    start = time.perf_counter()
    count = sum(1 for _ in iter_frames(path, np.arange(max_frames), lambda f: resize_crop_uint8(f[None])))
    return count / (time.perf_counter() - start)


def model_throughput(arch, batch, repeats=3):
    from stres_jax.inference import ClipRunner
    from stres_jax.loader import ModelOptions, load_net
    runner = ClipRunner(load_net(ModelOptions(arch=arch, random_init=True)), batch_size=batch)
    clips = np.zeros((batch, 16, 112, 112, 3), np.uint8)
    runner.run(clips)  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.run(clips)
        times.append(time.perf_counter() - start)
    return batch / min(times)


def predict_peak_memory(path, arch):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stres_jax.cli", "predict", str(path), "--random-init",
                    "--arch", arch, "--window", "16", "--stride", "16", "--format", "json"],
                   check=True, stdout=subprocess.DEVNULL)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak_kib / 1024 ** 2, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", help="an existing video (default: make one)")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--arch", default="r2plus1d_18")
    parser.add_argument("--decode-frames", type=int, default=1500)
    parser.add_argument("--skip-predict", action="store_true")
    args = parser.parse_args()
    path = Path(args.video or f"/tmp/stres_jax_bench_{args.minutes:g}min_720p.mp4")
    if not path.exists():
        t = time.perf_counter()
        make_video(path, args.minutes)
        print(f"made {path} ({os.path.getsize(path) / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    decode_fps = decode_throughput(path, args.decode_frames)
    model_cps = model_throughput(args.arch, 1)
    print(f"decode + resize/crop: {decode_fps:.1f} frames/s ({decode_fps / 16:.2f} clips/s of 16 frames)")
    print(f"model {args.arch}, batch 1: {model_cps:.2f} clips/s ({16 * model_cps:.1f} frames/s)")
    print(f"bound by: {'model' if model_cps * 16 < decode_fps else 'decoding'} "
          f"(decode/model frame-rate ratio {decode_fps / (16 * model_cps):.1f})")
    if not args.skip_predict:
        peak_gb, seconds = predict_peak_memory(path, args.arch)
        print(f"predict --window 16 --stride 16: peak RSS {peak_gb:.2f} GB, {seconds:.0f} s")


if __name__ == "__main__":
    main()
