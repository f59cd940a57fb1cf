"""512-d video embeddings (pooled pre-logits averaged over the protocol's clips).

Runs on the evaluation machinery, so large sets are sharded over devices and hosts and a
run with `--workdir` resumes where it stopped.
"""
import tempfile
from pathlib import Path

import numpy as np

from stres_jax.atomic import atomic_path
from stres_jax.data.sources import VideoItem, folder_source
from stres_jax.eval import evaluate
from stres_jax.labels import kinetics400_labels
from stres_jax.records import read_records


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
