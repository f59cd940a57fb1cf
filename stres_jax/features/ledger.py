"""A features folder's bookkeeping, kept in its private `.stres_jax/` folder so that no user file is
touched: one append-only shard of index lines per process, a lock per process (held while a run
writes; the kernel drops it when the process dies), and `state.json` saying whether the last run
finished. `index.jsonl` at the top holds every video's line, earlier runs' included."""
import fcntl
import json
import os
from pathlib import Path

from stres_jax.errors import UserError
from stres_jax.eval import records
from stres_jax.runtime.atomic import atomic_path

INDEX, PRIVATE, STATE = "index.jsonl", ".stres_jax", "state.json"


def private(out):
    return Path(out) / PRIVATE


def read_lines(out):
    """{video: line} of the index and the shards, the later line of a video winning (a retried
    video's new line replaces its error), in the order first seen."""
    return {record["video"]: record for path in [Path(out) / INDEX, *sorted(private(out).glob("index-*.jsonl"))]
            for record in records.read_lines(path)}


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
    """This process's shard (`index-PPPPP.jsonl` in the private folder), as eval's shards are opened."""
    return records.open_shard(private(out), process, "index")


def combine(out, items):
    """index.jsonl: the earlier entries in their order, then this run's new videos in the source's
    order, written atomically; the shards go, and the run is marked finished."""
    lines = read_lines(out)
    earlier = [r["video"] for r in records.read_lines(Path(out) / INDEX)]
    order = dict.fromkeys([*earlier, *(item.key for item in items if item.key in lines)])
    with atomic_path(Path(out) / INDEX) as staging:
        staging.write_text("".join(json.dumps(lines[key]) + "\n" for key in order))
    records.remove_shards(private(out), "index")
    write_state(out, complete=True, videos=len(order), errors=sum("error" in lines[k] for k in order))

