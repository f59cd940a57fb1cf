"""A features folder's bookkeeping, kept in its private `.stres_jax/` folder so that no user file is
touched: one append-only shard of index lines per process, a lock per process (held while a run
writes; the kernel drops it when the process dies), and `state.json` saying whether the last run
finished. `index.jsonl` at the top holds every video's line, earlier runs' included."""
import fcntl
import json
import os
from pathlib import Path

from stres_jax.errors import UserError
from stres_jax.runtime.atomic import atomic_path

INDEX, PRIVATE, STATE = "index.jsonl", ".stres_jax", "state.json"


def private(out):
    return Path(out) / PRIVATE


def read_lines(out):
    """{video: line} of the index and the shards, the later line of a video winning (a retried
    video's new line replaces its error), in the order first seen."""
    records = {}
    files = [Path(out) / INDEX, *sorted(private(out).glob("index-*.jsonl"))]
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the half-written last line of a killed run
            if isinstance(record, dict) and "video" in record:
                records[record["video"]] = record
    return records


def read_state(out):
    try:
        return json.loads((private(out) / STATE).read_text())
    except (OSError, ValueError):
        return None


def write_state(out, **state):
    with atomic_path(private(out) / STATE) as staging:
        staging.write_text(json.dumps(state))


class Lock:
    """This process's lock on `out` (one per process index, so the processes of one multi-host
    run do not exclude each other); a second run at once is refused in one line."""

    def __init__(self, out, process):
        private(out).mkdir(parents=True, exist_ok=True)
        self.path, self.out = private(out) / f"lock-{process:05d}", out

    def __enter__(self):
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise UserError(f"{self.out}: another features run ({holder}) is writing here; wait for it to "
                            "end, or choose another --out") from None
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()  # closing drops the lock


def open_shard(out, process):
    """This process's shard, opened for appending after cutting any half-written last line."""
    path = private(out) / f"index-{process:05d}.jsonl"
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
    return open(path, "a")


def combine(out, items):
    """index.jsonl: the earlier entries in their order, then this run's new videos in the source's
    order, written atomically; the shards go, and the run is marked finished."""
    records = read_lines(out)
    earlier = [r["video"] for r in _index_lines(out)]
    order = dict.fromkeys([*earlier, *(item.key for item in items if item.key in records)])
    with atomic_path(Path(out) / INDEX) as staging:
        staging.write_text("".join(json.dumps(records[key]) + "\n" for key in order if key in records))
    for shard in private(out).glob("index-*.jsonl"):
        shard.unlink()
    write_state(out, complete=True, videos=len(order), errors=sum("error" in records[k] for k in order))


def _index_lines(out):
    path = Path(out) / INDEX
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in lines if isinstance(r, dict) and "video" in r]
