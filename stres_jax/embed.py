"""512-d video embeddings (pooled pre-logits averaged over the protocol's clips).

Runs on the evaluation machinery, so large sets are sharded over devices and hosts and a
run with `--workdir` resumes where it stopped.
"""
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from stres_jax.runtime.atomic import ZIP_COMMENT, output_path
from stres_jax.data.sources import VideoItem, unique_items, video_tree
from stres_jax.errors import UserError
from stres_jax.eval.run import evaluate
from stres_jax.labels import kinetics400_labels
from stres_jax.eval.records import read_records


def items_for(paths):
    """VideoItems of videos and folders of them (flat, Kinetics-layout or nested): a top folder's
    name becomes the label, spelt as the Kinetics class of that name where there is one."""
    items, known = [], kinetics400_labels()
    for path in (Path(p).absolute() for p in paths):  # absolute: the .npz is read from elsewhere
        items += video_tree(path, known) if path.is_dir() else [VideoItem(str(path))]
    return unique_items(items)


def store_items(path):
    """VideoItems of a clip store (`stres-jax prepare`), named by their source keys; class
    names spelt as the Kinetics class of that name where there is one."""
    from stres_jax.config.base import get_base_config
    from stres_jax.data.sources import make_source
    data = get_base_config().data
    data.source, data.store = "store", str(path)
    return make_source(data, kinetics400_labels(), strict=False)


def embedding_arrays(records):
    """{"embeddings", "paths"[, "labels"]} as plain arrays from embedding records (embed adds
    "run": a JSON string of the arch, weights fingerprint, checkpoint and protocol)."""
    good = [r for r in records if r and "embedding" in r]
    arrays = {"embeddings": np.asarray([r["embedding"] for r in good], np.float32).reshape(-1, 512),
              "paths": np.asarray([r["video"] for r in good], dtype=str)}
    if good and all(r.get("label") is not None for r in good):
        arrays["labels"] = np.asarray([r["label"] for r in good], dtype=str)
    return arrays


def embed(items, config, workdir=None, net=None):
    """(arrays, skipped) for VideoItems, with `config` (get_base_config's fields) choosing the net
    (`net`: that net, when the caller has loaded it already)."""
    with tempfile.TemporaryDirectory(prefix="stres_jax_embed_") as scratch:
        workdir = Path(workdir or scratch)
        results = evaluate(config, workdir, items=items, embeddings=True, net=net)
        if results is None:  # not process 0
            return None, None
        records = read_records(workdir)
        arrays = embedding_arrays([records.get(item.key) for item in items])
        arrays["run"] = np.asarray(json.dumps(results["run"]))  # what made them: net, weights, protocol
        return arrays, results["skipped"]


def load_npz(path, needed=("embeddings", "paths")):
    """An embeddings .npz (plain arrays only), or a UserError naming the file and what to do."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; make it with `stres-jax embed VIDEOS --out {path}`") from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable .npz ({err})") from None
    missing = [key for key in needed if key not in data]
    if missing:
        raise UserError(f"{path}: has no {', '.join(missing)} array; is it from `stres-jax embed`?")
    return data


def window_embeddings(runner, paths, plan, progress=False, workers=None):
    """Pooled 512-d features of every window of each video (the windows of `predict --window`):
    {"window_embeddings" (N, 512) float32, "window_video" (N,) index into `paths`,
    "window_start", "window_end" (N,) seconds}, and the errors of videos that failed (their
    windows are left out). Decoding streams: memory stays flat."""
    from stres_jax.predict import run_plan
    features, videos, starts, ends, errors = [], [], [], [], []
    for index, path in enumerate(paths):
        try:
            out = run_plan(runner, str(path), plan, progress, main=False, workers=workers)
        except UserError as err:
            errors.append({"video": str(path), "reason": str(err)})
            continue
        times = out.window_times()
        features.append(out.window_features)
        videos += [index] * len(times)
        starts += [start for start, _ in times]
        ends += [end for _, end in times]
    return {"window_embeddings": np.concatenate(features or [np.zeros((0, 512), np.float32)]).astype(np.float32),
            "window_video": np.asarray(videos, np.int64), "window_start": np.asarray(starts, np.float64),
            "window_end": np.asarray(ends, np.float64)}, errors


def save_npz(arrays, out, overwrite=False, inputs=()):
    """The arrays as an .npz marked as stres_jax's (its zip comment), so that a rerun may replace it."""
    import zipfile
    with output_path(out, "npz", overwrite, inputs) as staging:
        with open(staging, "wb") as file:
            np.savez(file, **arrays)
        with zipfile.ZipFile(staging, "a") as archive:
            archive.comment = ZIP_COMMENT
