"""`open_features(DIR)`: the features `extract` wrote, as a mapping from video key (or position
in index order, so it can be a grain `MapDataset` source) to memory-mapped arrays and window times."""
import collections.abc
from pathlib import Path

import numpy as np

from stres_jax.errors import UserError
from stres_jax.features import ledger


class Features(collections.abc.Mapping):
    """`features[key]` or `features[i]` -> {"features": (N, D) memory-mapped, "start": (N,) s,
    "end": (N,) s}; videos whose line has an `error` are left out. `complete`: the run that wrote
    the folder finished (`partial=True` reads an unfinished one; without it that is refused)."""

    def __init__(self, directory, partial=False):
        self.directory = Path(directory)
        if not (self.directory / "run.json").is_file():
            raise UserError(f"{directory}: not a features folder (no run.json); make one with "
                            "`stres-jax features ... --out DIR`")
        state = ledger.read_state(self.directory) or {}
        lines = ledger.read_lines(self.directory)
        finished = state.get("complete") if state else (self.directory / ledger.INDEX).is_file()  # older runs: no state
        self.complete = bool(finished) and not any(ledger.private(self.directory).glob("index-*.jsonl"))
        if not self.complete and not partial:
            planned = f" of {state['videos']}" if "videos" in state else ""
            raise UserError(f"{directory}: an unfinished features run: {len(lines)}{planned} videos have their "
                            "line; run the same command again to finish it, or open_features(DIR, partial=True) "
                            "to read what is there")
        self.records = [record for record in lines.values() if "error" not in record]
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


def open_features(directory, partial=False):
    """The features of a finished `stres-jax features` run in `directory` (`partial=True`: also of
    an unfinished one, what it has written so far; `.complete` says which)."""
    return Features(directory, partial)
