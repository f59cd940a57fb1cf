"""`stres-jax embed`: 512-d video embeddings (pooled pre-logits averaged over the protocol's clips).

Runs on the evaluation machinery, so large sets are sharded over devices and hosts and a
run with `--workdir` resumes where it stopped.
"""
import json
import tempfile
from pathlib import Path

import numpy as np

from stres_jax.atomic import atomic_path
from stres_jax.checkpoints.store import kinetics400_labels
from stres_jax.config_base import get_base_config
from stres_jax.data.sources import VideoItem, folder_source
from stres_jax.errors import UserError
from stres_jax.eval import evaluate, read_records
from stres_jax.models import ARCH_SPECS
from stres_jax.xla_options import add_cpu_library_flag


def items_for(paths):
    """VideoItems of videos and Kinetics-layout folders: folder names become labels, spelt as
    the Kinetics class of that name where there is one."""
    items, known = [], kinetics400_labels()
    for path in map(Path, paths):
        items += folder_source(path, known, strict=False) if path.is_dir() else [VideoItem(str(path))]
    return items


def embedding_arrays(records):
    """{"embeddings", "paths"[, "labels"]} as plain arrays from embedding records."""
    good = [r for r in records if r and "embedding" in r]
    arrays = {"embeddings": np.asarray([r["embedding"] for r in good], np.float32).reshape(-1, 512),
              "paths": np.asarray([r["video"] for r in good], dtype=str)}
    if good and all(r.get("label") is not None for r in good):
        arrays["labels"] = np.asarray([r["label"] for r in good], dtype=str)
    return arrays


def embed(items, config, workdir=None):
    """(arrays, skipped) for VideoItems, with `config` (get_base_config's fields) choosing the net."""
    with tempfile.TemporaryDirectory(prefix="stres_jax_embed_") as scratch:
        workdir = Path(workdir or scratch)
        results = evaluate(config, workdir, items=items, embeddings=True)
        if results is None:  # not process 0
            return None, None
        records = read_records(workdir)
        return embedding_arrays([records.get(item.key) for item in items]), results["skipped"]


def save_npz(arrays, out):
    with atomic_path(out) as staging:
        with open(staging, "wb") as file:
            np.savez(file, **arrays)


def register(subparsers):
    parser = subparsers.add_parser(
        "embed", help="512-d embeddings of videos or a Kinetics-layout folder",
        description="Write an .npz with `embeddings` (N, 512) float32 (pooled pre-logit features "
        "averaged over the protocol's 5 clips), `paths` and, for folders, `labels` (the folder "
        "names). Plain arrays: loads with allow_pickle=False. Unreadable videos are listed and skipped.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="videos, or folders of <class>/<video>")
    parser.add_argument("--out", required=True, metavar="FILE.npz")
    parser.add_argument("--checkpoint", help="checkpoint directory (default: the cached `fetch` one)")
    parser.add_argument("--arch", default="r2plus1d_18", help=f"with no --checkpoint: {', '.join(ARCH_SPECS)}")
    parser.add_argument("--workdir", help="keep per-video results here; a rerun resumes (default: temporary)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips", type=int, default=5, help="clips per video (default 5)")
    add_cpu_library_flag(parser)
    parser.set_defaults(func=run)


def run(args):
    config = get_base_config()
    config.arch, config.checkpoint, config.batch_size = args.arch, args.checkpoint or "", args.batch_size
    config.protocol.clips_per_video = args.clips
    config.cpu_library = args.cpu_library
    items = items_for(args.paths)
    if not items:
        raise UserError("no videos found in the given paths")
    arrays, skipped = embed(items, config, args.workdir)
    if arrays is None:
        return 0
    save_npz(arrays, args.out)
    for entry in skipped:
        print(f"stres-jax: skipped {entry['reason']}")
    print(json.dumps({"out": args.out, "videos": len(arrays["paths"]), "skipped": len(skipped)}))
    return 1 if skipped else 0
