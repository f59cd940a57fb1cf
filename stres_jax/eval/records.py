"""Per-video prediction records: one append-only JSONL shard per process, read back on resume,
and combined into `predictions.jsonl` when the run ends (the shards are then removed).

A killed run leaves at most a half-written last line, which is cut before appending again,
so a resumed run neither loses nor doubles a video.
"""
import json
from pathlib import Path

COMBINED = "predictions.jsonl"


def read_lines(path):
    """The complete records (objects with a "video") of one JSONL file, in order; [] if it is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the half-written last line of a killed run
        if isinstance(record, dict) and "video" in record:
            records.append(record)
    return records


def read_records(workdir, combined=COMBINED, prefix="predictions"):
    """Every complete line of the combined file and every shard (`PREFIX-PPPPP.jsonl`) in
    `workdir`, first occurrence of each video."""
    records = {}
    for shard in [Path(workdir) / combined, *sorted(Path(workdir).glob(f"{prefix}-*.jsonl"))]:
        for record in read_lines(shard):
            records.setdefault(record["video"], record)
    return records


def open_shard(workdir, process, prefix="predictions"):
    """This process's shard, opened for appending after cutting any half-written last line."""
    path = Path(workdir) / f"{prefix}-{process:05d}.jsonl"
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
    return open(path, "a")


def remove_shards(workdir, prefix="predictions"):
    """Delete the per-process shards once the combined file holds their records."""
    for shard in Path(workdir).glob(f"{prefix}-*.jsonl"):
        shard.unlink()
