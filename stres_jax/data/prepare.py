"""`prepare`: decode a source's videos once into a clip store (`data.store`), in the bounded
decoding workers, shard by shard; killed and started again it makes only the unfinished shards,
and several processes (`process_index` of `process_count`, e.g. one per host) fill one store.
Each video's frames stream from its worker into the shard in chunks (`CHUNK` frames through a
bounded queue): memory does not grow with a video's length."""
import contextlib
import json
import math
import os
import sys
import zlib
from pathlib import Path

import ml_collections
import numpy as np

from stres_jax.runtime.atomic import atomic_path, check_folder, remove_stale_partials
from stres_jax.data import sampling
from stres_jax.data.sources import make_source, source_of
from stres_jax.runtime.interrupt import GracefulStop, Stopped, resume_command
from stres_jax.data.store import (COLUMNS, DEFAULT_ENCODING, DEFAULT_QUALITY, ENCODINGS, FORMAT_VERSION, FRAME_ROW,
                                  FRAMES_FILE, INDEX_FILE, STORE_FILE, encoder, whole_frame)
from stres_jax.data.transforms import RESIZE
from stres_jax.models.preset import TORCHVISION
from stres_jax.data.readers import as_reader, stream_frames
from stres_jax.data.workers import DecodeWorkers
from stres_jax.errors import UserError
from stres_jax.data.pipeline import streamed_videos
from stres_jax.runtime.progress import progress as progress_bar

VIDEOS_PER_SHARD = 64
CHUNK = 32  # encoded frames a worker sends at once


def prepare(data, out, encoding=DEFAULT_ENCODING, quality=DEFAULT_QUALITY, workers=2, process_index=0,
            process_count=1, videos_per_shard=VIDEOS_PER_SHARD, progress=None):
    """Write the videos of the `data` block (a config's) to the clip store `out`; returns the
    skipped videos `[{"video", "reason"}]` of every finished shard (also in `out/skipped.json`)."""
    if encoding not in ENCODINGS:
        raise UserError(f"encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    if not 1 <= int(quality) <= 100:
        raise UserError(f"quality {quality}: must be 1 to 100")
    if not 0 <= process_index < process_count:
        raise UserError(f"process index {process_index}: must be below the process count {process_count}")
    source = source_of(data)
    out = check_folder(Path(out).absolute(), "--out", [data.get(key) for key in source.paths if data.get(key)])
    data = ml_collections.ConfigDict(data.to_dict())  # keys are absolute paths, wherever the store is read
    for key in source.paths:
        data[key] = str(Path(data[key]).absolute()) if data[key] else ""
    items = make_source(data, None, any_depth=True)  # labels optional: a flat folder too
    classes = sorted({item.label for item in items if item.label is not None})
    num_shards = max(math.ceil(len(items) / videos_per_shard), 1)
    identity = {"format_version": FORMAT_VERSION, "data": source.identity(data), "fps": float(sampling.FRAME_RATE),
                "frame_size": list(RESIZE), "preset": TORCHVISION.spatial, "encoding": encoding, "quality": int(quality) if encoding == "jpeg" else None,
                "videos_per_shard": videos_per_shard, "num_videos": len(items)}
    _claim(out, {"identity": identity, "classes": classes, "num_shards": num_shards})
    remove_stale_partials(out)  # a killed run's staging files, whatever their pid
    shards = [s for s in range(process_index, num_shards, process_count) if not (out / _name(s, "json")).exists()]
    mine = [(s, item) for s in shards for item in items[s * videos_per_shard: (s + 1) * videos_per_shard]]
    label_of = {name: i for i, name in enumerate(classes)}
    stop = GracefulStop("stres-jax prepare", "stopping now: the finished shards are kept, the one in progress "
                        "is made again by the next run")
    with stop, DecodeWorkers(workers) as pool, progress_bar(len(mine), f"prepare {out.name}", "video",
                                                                   show=progress is not False) as bar:
        stop.on_stop = stop.on_exit = pool.stop
        def load(item, reader):
            if reader.isolated:
                return pool.run(item.key, store_task, reader, (encoding, quality))
            return store_task(reader, (encoding, quality))
        written = 0

        def halt():  # raised before the shard in progress is renamed into place: its staging file goes
            if stop:
                raise Stopped(f"stopped by {stop.name} with {done} of {len(shards)} shards made here; to "
                              f"finish, run the same command again: {resume_command()}", stop.exit_status)

        def shard_videos(count):
            for _ in range(count):
                halt()
                yield next(videos)
        with contextlib.closing(streamed_videos([item for _, item in mine], load, workers)) as videos:
            for done, shard in enumerate(shards):
                count = len(items[shard * videos_per_shard: (shard + 1) * videos_per_shard])
                written += _write_shard(out, shard, shard_videos(count), label_of, bar, halt)
                bar.set_postfix_str(f"{written / 2**20:,.0f} MB written")
    skipped = _finish(out, num_shards)
    return skipped


def _flat(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


def _difference(there, wanted):
    """'identity.encoding: lossless there, jpeg asked for', the first field that differs."""
    if not isinstance(there, dict):
        return "its store.json is damaged"
    there, wanted = _flat(there), _flat(wanted)
    key = next(k for k in sorted(set(there) | set(wanted)) if there.get(k) != wanted.get(k))
    return f"{key.strip('.').removeprefix('identity.')}: {there.get(key)!r} there, {wanted.get(key)!r} asked for"


def _name(shard, suffix):
    return f"shard-{shard:05d}.{suffix}"


def _claim(out, header):
    """Write store.json, or check that the one there describes the same store."""
    path = out / STORE_FILE
    if path.exists():
        try:
            there = json.loads(path.read_text())
        except ValueError:
            there = None
        wanted = json.loads(json.dumps(header))
        if there != wanted:
            raise UserError(f"{out}: holds another clip store ({_difference(there, wanted)}); use another "
                            "--out, or delete it to start again")
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not a clip store; use a new or empty folder for --out")
    with atomic_path(path) as staging:
        staging.write_text(json.dumps(header, indent=1))


def _write_shard(out, shard, videos, label_of, bar, halt=lambda: None):
    """Write one shard from `(item, chunks)` (`store_task`'s messages); returns the bytes written.
    A video that fails part-way is cut back out of the shard and listed as skipped, unless the
    run was stopped (`halt` raises then)."""
    entries, skipped, rows, offset = [], [], [], 0
    frames_path = out / _name(shard, "frames")
    with atomic_path(frames_path) as staging, open(staging, "wb") as file:
        for item, chunks in videos:
            bar.update()
            entry = {"key": item.key, "class": label_of.get(item.label, -1), "first": len(rows)}
            try:
                for message in chunks:
                    if isinstance(message, dict):  # the last message: the video's metadata
                        entries.append({**entry, **message, "num_frames": len(rows) - entry["first"], "error": ""})
                        continue
                    for blob in message:
                        file.write(blob)
                        rows.append((offset, len(blob), zlib.crc32(blob)))
                        offset += len(blob)
            except UserError as err:
                halt()
                del rows[entry["first"]:]
                offset = rows[-1][0] + rows[-1][1] if rows else 0
                file.seek(offset)
                file.truncate()
                print(f"stres-jax prepare: skipped {err}", file=sys.stderr)
                skipped.append({"video": item.key, "reason": str(err)})
                entries.append({**entry, "num_frames": 0, "source_fps": 0.0, "duration": 0.0, "error": str(err)})
        file.flush()
        os.fsync(file.fileno())
    with atomic_path(out / _name(shard, "npy")) as staging:
        with open(staging, "wb") as file:
            np.save(file, np.asarray(rows, FRAME_ROW))
    with atomic_path(out / _name(shard, "json")) as staging:  # last: the shard is finished
        staging.write_text(json.dumps({"videos": entries, "skipped": skipped}))
    return offset


def _finish(out, num_shards):
    """skipped.json from every finished shard; once all are, the store's index and frame table."""
    done = [s for s in range(num_shards) if (out / _name(s, "json")).exists()]
    shards = {s: json.loads((out / _name(s, "json")).read_text()) for s in done}
    skipped = [entry for s in done for entry in shards[s]["skipped"]]
    with atomic_path(out / "skipped.json") as staging:
        staging.write_text(json.dumps(skipped, indent=1))
    if len(done) < num_shards or (out / INDEX_FILE).exists():
        return skipped
    columns, tables, first = {name: [] for name in COLUMNS}, [], 0
    for s in range(num_shards):
        table = np.load(out / _name(s, "npy"))
        for video in shards[s]["videos"]:
            for name in COLUMNS:
                columns[name].append(s if name == "shard" else first + video["first"] if name == "first" else video[name])
        tables.append(table)
        first += len(table)
    with atomic_path(out / FRAMES_FILE) as staging:
        with open(staging, "wb") as file:
            np.save(file, np.concatenate(tables) if tables else np.zeros(0, FRAME_ROW))
    with atomic_path(out / INDEX_FILE) as staging:  # last: the store is finished
        staging.write_text(json.dumps(columns))
    return skipped


def store_task(video, encoding):
    """Worker task: a video (a reader or path) decoded once at the store's 15 fps, yielded as lists
    of at most CHUNK encoded frames, then its metadata (a dict); `encoding` is (name, quality).
    A video too short for one 15 fps frame keeps its first."""
    reader = as_reader(video)
    info = reader.probe()
    indices = info.resampled(sampling.FRAME_RATE)
    indices = indices if len(indices) else np.zeros(1, np.int64)
    encode, chunk = encoder(*encoding), []
    for frame in stream_frames(reader, indices, whole_frame):
        chunk.append(encode(frame))
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
    yield {"source_fps": info.fps, "duration": info.duration}

