"""`extract`: dense window features of every video of a source, one `.npy` per video.

Every device of every process runs the net at once (`runtime.mesh.DataParallel`); videos are dealt
to processes by size, so one long video does not leave the others idle; windows of different
videos share a batch. Decoding runs in the bounded worker processes, streamed into a bounded
queue, so memory does not grow with a video's length. Each `.npy` is written atomically, then its
line is appended to this process's shard (`features.ledger`); a rerun redoes only the videos without
a line and those that failed, and process 0 adds the lines to `index.jsonl` at the end, keeping
every earlier entry: a second run with other videos adds them."""
import hashlib
import json
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stres_jax.data.clips import window_task
from stres_jax.data.readers import probe_task
from stres_jax.data.pipeline import submit_padded
from stres_jax.data.transforms import clip_shape
from stres_jax.data.workers import DecodeWorkers
from stres_jax.errors import UserError
from stres_jax.data.sources import unique_items
from stres_jax.features import ledger
from stres_jax.runtime.atomic import atomic_path, check_folder, remove_stale_partials
from stres_jax.runtime.distributed import any_process, sync_processes
from stres_jax.runtime.interrupt import GracefulStop
from stres_jax.runtime.mesh import DataParallel
from stres_jax.runtime.progress import progress
from stres_jax.runtime.workdir import claim_workdir, weights_fingerprint
from stres_jax.runtime.xla_options import compiler_options

LAYERS = ("pre_logits", "layer1", "layer2", "layer3", "layer4")


def pooled_forward(model, layer):
    """`(variables, clips) -> {"features": (B, D) float32}`: `layer` mean-pooled over time and space."""
    def forward(variables, clips):
        _, features = model.apply(variables, clips, return_features=True)
        value = features[layer]
        value = value if layer == "pre_logits" else jnp.mean(value, axis=(1, 2, 3))
        return {"features": value.astype(jnp.float32)}
    return forward


def feature_file(key):
    """A collision-safe file name for a video key: readable stem + a hash of the whole key."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(key)).stem)[:80] or "video"
    return f"{stem}-{hashlib.sha1(str(key).encode('utf-8', 'surrogateescape')).hexdigest()[:10]}.npy"


def deal(items, weights, process_index, process_count):
    """This process's items: the longest first to the least loaded process (the same on every process)."""
    loads, mine = [0.0] * process_count, []
    for weight, i in sorted(((-w, i) for i, w in enumerate(weights))):
        target = loads.index(min(loads))
        loads[target] -= weight
        if target == process_index:
            mine.append(items[i])
    return mine


def _weight(item):
    reader = item.reader
    if hasattr(reader, "path") and os.path.isfile(reader.path):
        return os.path.getsize(reader.path)
    if hasattr(reader, "store"):
        return reader.store.num_frames(reader.index)
    return 1


class _Producer:
    """Threads that decode this process's videos into a bounded queue of `(item, kind, value)`:
    ("video", (windows, start, end)), ("clip", (k, clip)), ("error", reason), and one
    (None, "exit", None) per thread when it has no more videos."""

    def __init__(self, items, plan, workers, threads, batch_size, depth):
        self.items, self.plan, self.workers, self.batch_size = iter(items), plan, workers, batch_size
        self.queue, self.lock, self.stopped = queue.Queue(depth), threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(max(threads, 1))]
        self.alive = len(self.threads)
        for thread in self.threads:
            thread.start()

    def _work(self):
        while not self.stopped.is_set():
            with self.lock:  # sequential readers (TFDS through tf.data) load in order
                item = next(self.items, None)
                reader = item and (item.reader.load() if item.reader.sequential else item.reader)
            if item is None:
                break
            try:
                self._video(item, reader)
            except Exception as err:  # noqa: BLE001 (a decoder failure costs this video only)
                if self.stopped.is_set():  # its decoder was stopped with the run: not the video's fault
                    break
                reason = str(err) if isinstance(err, UserError) else f"{item.key}: {type(err).__name__}: {err}"
                self._put(item, "error", reason)
        self._put(None, "exit", None)

    def _video(self, item, reader):
        info = list(self.workers.run(item.key, probe_task, reader))[0] if reader.isolated else reader.probe()
        windows, start, end = self.plan.windows(info)
        self._put(item, "video", (len(windows), start, end))
        source = (self.workers.run(item.key, window_task, reader, windows, self.batch_size, self.plan.preset)
                  if reader.isolated else window_task(reader, windows, self.batch_size, self.plan.preset))
        for batch in source:
            for k, clip in batch:
                if self.stopped.is_set():
                    return
                self._put(item, "clip", (k, clip))

    def _put(self, item, kind, value):
        self.queue.put((item, kind, value))

    def stop(self):
        self.stopped.set()


def extract(items, out, net, plan, layer="pre_logits", batch_size=8, half=False, workers=2, show=True):
    """Write the `layer` features of every window of `items` (VideoItems) to `out`; returns
    {"videos", "windows", "errors", "stopped"} for this process (`stopped`: 130 or 143 when
    SIGINT or SIGTERM cut the run short; the finished videos are written)."""
    if layer not in LAYERS:
        raise UserError(f"layer {layer!r}: choose one of {', '.join(LAYERS)}")
    out = check_folder(Path(out).absolute(), "--out")
    identity = {"kind": "features", "arch": net.arch, "weights_sha256": weights_fingerprint(net.variables),
                "dtype": net.options.dtype, "layer": layer, "half": bool(half), **plan.describe()}
    items = unique_items(items)
    results = ("*.npy", ledger.INDEX)
    claim_workdir(out, identity, results, "choose another --out", write=False)  # refused before the lock is touched
    out.mkdir(parents=True, exist_ok=True)
    with ledger.Lock(out, jax.process_index()):
        claim_workdir(out, identity, results, "choose another --out")
        remove_stale_partials(out)
        if jax.process_index() == 0:
            ledger.write_state(out, complete=False, videos=len(items))
        return _extract(items, out, net, plan, layer, batch_size, half, workers, show)


def _extract(items, out, net, plan, layer, batch_size, half, workers, show):
    done = {key for key, record in ledger.read_lines(out).items() if "error" not in record}
    todo = [item for item in items if item.key not in done]  # failed videos are tried again
    mine = deal(todo, [_weight(item) for item in todo], jax.process_index(), jax.process_count())
    parallel = DataParallel(pooled_forward(net.model, layer), net.variables, batch_size,
                            compiler_options(net.options.cpu_library))
    line = {"layer": layer, **plan.describe()}
    widths = net.model.spec.widths
    width = widths[-1] if layer == "pre_logits" else widths[int(layer[-1]) - 1]
    counts = {"videos": 0, "windows": 0, "errors": 0}
    stop = GracefulStop("stres-jax features", "stopping after the batch in flight (every finished video is kept)")
    with stop, DecodeWorkers(workers) as decoders, ledger.open_shard(out, jax.process_index()) as shard, \
            progress(len(mine), "features", "video", show=show and jax.process_index() == 0) as bar:
        producer = _Producer(mine, plan, decoders, workers, parallel.local_batch, 4 * parallel.local_batch)
        stop.on_stop = stop.on_exit = lambda: (producer.stop(), decoders.stop())  # no new decoding; workers end
        if stop:
            stop.on_stop()
        pending, start = {}, time.perf_counter()

        def finish(item, record):
            shard.write(json.dumps(record) + "\n")
            shard.flush()
            counts["errors" if "error" in record else "videos"] += 1
            if "error" in record:
                print(f"stres-jax: error: {record['video']}: {record['error']}", file=sys.stderr)
            bar.update()
            bar.set_postfix(windows_s=f"{counts['windows'] / (time.perf_counter() - start):.1f}")

        def take(rows):
            while len(rows) < parallel.local_batch and producer.alive:
                if stop:
                    producer.stop()
                try:
                    item, kind, value = producer.queue.get(timeout=0.1 if rows else 1.0)
                except queue.Empty:
                    if rows:
                        return rows  # a partial batch rather than an idle net
                    continue
                if kind == "exit":
                    producer.alive -= 1
                elif kind == "error":
                    pending.pop(item.key, None)
                    finish(item, {"video": item.key, "label": item.label, "error": value.removeprefix(f"{item.key}: ")})
                elif kind == "video":
                    count, begin, end = value
                    pending[item.key] = (np.zeros((count, width), np.float32), begin, end, [0])
                else:
                    rows.append((item, *value))
            return rows

        def store(rows, submitted):
            features = parallel.fetch(submitted)["features"]
            for i, (item, k, _) in enumerate(rows):
                if item.key not in pending:  # its decoding failed after these windows were queued
                    continue
                values, begin, end, filled = pending[item.key]
                values[k], filled[0] = features[i], filled[0] + 1
                counts["windows"] += 1
                if filled[0] == len(values):
                    del pending[item.key]
                    finish(item, _write_video(out, item, values, begin, end, half, line, plan))

        in_flight = None
        while True:
            rows = take([]) if not stop else []  # stopped: the queued windows are dropped
            more = any_process(len(rows) > 0)
            submitted = None
            if more:
                submitted = (rows, submit_padded(parallel, [clip for _, _, clip in rows],
                                                      clip_shape(plan.clip_len, crop=plan.preset.crop), plan.preset))
            if in_flight:
                store(*in_flight)
            in_flight = submitted
            if not more:
                break
        producer.stop()
    stopped = stop.exit_status
    sync_processes("stres_jax features finished")
    if not stopped and jax.process_index() == 0:
        ledger.combine(out, items)
    return {**counts, "stopped": stopped}


def _write_video(out, item, features, start, end, half, line, plan):
    """Write one video's features atomically; its index line."""
    name = feature_file(item.key)
    with atomic_path(out / name) as staging:
        with open(staging, "wb") as file:
            np.save(file, features.astype(np.float16 if half else np.float32))
    record = {"video": item.key, "label": item.label, "file": name, "windows": len(features), **line}
    if not plan.fps or plan.interval > 1:  # native frames: their timestamps, which no formula gives
        record.update(start=np.round(start, 6).tolist(), end=np.round(end, 6).tolist())
    return record
