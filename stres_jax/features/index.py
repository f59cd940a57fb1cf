"""`open_features(DIR)`: the features `extract` wrote, as a mapping from video key (or position
in index order, so it can be a grain `MapDataset` source) to memory-mapped arrays and window times."""
import collections.abc
import json
from pathlib import Path

import numpy as np

from stres_jax.errors import UserError


class Features(collections.abc.Mapping):
    """`features[key]` or `features[i]` -> {"features": (N, D) memory-mapped, "start": (N,) s,
    "end": (N,) s}; videos whose line has an `error` are left out."""

    def __init__(self, directory):
        self.directory = Path(directory)
        path = self.directory / "index.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else [
            line for shard in sorted(self.directory.glob("index-*.jsonl")) for line in shard.read_text().splitlines()]
        if not lines and not self.directory.is_dir():
            raise UserError(f"{directory}: no such features folder; make one with `stres-jax features ... --out DIR`")
        self.records = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the half-written last line of a killed run
            if "error" not in record:
                self.records.append(record)
        self.position = {record["video"]: i for i, record in enumerate(self.records)}

    def __getitem__(self, key):
        record = self.records[key] if isinstance(key, (int, np.integer)) else self.records[self.position[key]]
        count = record["windows"]
        if "start" in record:  # native frames: the windows' first and last frame timestamps
            start, end = np.asarray(record["start"]), np.asarray(record["end"])
        else:
            offsets = np.arange(count) * record["stride"]
            start, end = offsets / record["fps"], (offsets + record["clip_len"]) / record["fps"]
        return {"features": np.load(self.directory / record["file"], mmap_mode="r"), "start": start, "end": end}

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.position)


def open_features(directory):
    return Features(directory)
