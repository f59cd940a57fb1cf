"""`recognize(sources, runner)`: the live loop. Windows due at once from several sources share one
batch of the net; each source keeps its own clock, skips and errors."""
import collections
import dataclasses
import threading
import time

import numpy as np

from stres_jax.live.reader import SourceReader
from stres_jax.live.sources import Source


@dataclasses.dataclass
class LiveOptions:
    """How windows are cut and paced (the `stres-jax live` flags)."""
    clip_len: int | None = None   # None: the net's
    stride: int | None = None     # None: clip_len // 2
    crops: int = 1
    average: int = 1              # windows whose probabilities are averaged
    skip: bool = True             # False: every window, in order (offline-exact)
    realtime: bool = False        # play files at their own pace
    stall_timeout: float = 10.0
    retries: int = 5
    top: int = 5

    def window(self, preset):
        """(clip length, stride) in resampled frames for a net's `preset`."""
        clip_len = self.clip_len or preset.clip_len
        return clip_len, self.stride or max(clip_len // 2, 1)


class Tally:
    """What one source did: answered windows, latencies, its recent probabilities."""

    def __init__(self, average):
        self.latencies, self.recent = [], collections.deque(maxlen=average)

    def summary(self, reader):
        lat = np.asarray(self.latencies or [np.nan])
        wall = max(time.monotonic() - reader.started, 1e-9)
        return {"source": reader.source.text, "windows": len(self.latencies), "skipped": reader.skipped,
                "latency_p50": float(np.percentile(lat, 50)), "latency_p95": float(np.percentile(lat, 95)),
                "latency_max": float(lat.max()), "stream_seconds": round(reader.stream_seconds, 3),
                "realtime_factor": round(reader.stream_seconds / wall, 3), "error": reader.error}


def start_readers(sources, preset, options, say):
    """A started `SourceReader` per source text, sharing one condition to wake the loop."""
    wake = threading.Condition()
    clip_len, stride = options.window(preset)
    readers = [SourceReader(i, Source.parse(text) if isinstance(text, str) else text, preset, clip_len, stride,
                            options.crops, options.skip, wake, options.stall_timeout, options.retries,
                            options.realtime, say) for i, text in enumerate(sources)]
    return wake, [reader.start() for reader in readers]


def recognize(sources, runner, options=LiveOptions(), stop=None, say=print, tallies=None):
    """Yield one result dict per answered window (`source`, `start`, `end`, `wall`, `latency`,
    `top`, `averaged`, `skipped`, `compute`: the batch's seconds in the net; numpy `frame` and `probabilities`), from every source, until they all end or `stop` is set.
    `runner` is an `inference.ClipRunner`; `tallies` (a list) receives each source's `Tally`."""
    stop = stop or threading.Event()
    wake, readers = start_readers(sources, runner.model.preset, options, say)
    own = [Tally(options.average) for _ in readers]
    if tallies is not None:
        tallies.extend(zip(readers, own))
    try:
        while not stop.is_set():
            due = _due(readers, wake, stop)
            if due is None:
                return
            yield from _answer(due, readers, own, runner, options)
    finally:
        for reader in readers:
            reader.stop.set()
        with wake:
            wake.notify_all()


def _due(readers, wake, stop):
    """The windows due now (one per source), waiting for one; None once every source has ended."""
    with wake:
        while not stop.is_set():
            due = [w for w in (r.pending[0] if r.pending else None for r in readers) if w is not None]
            if due:
                break
            if all(r.done for r in readers):
                return None
            wake.wait(0.05)
        else:
            return []
    return [w for w in (readers[w.source].take() for w in due) if w is not None]


def _answer(due, readers, tallies, runner, options):
    crops = due[0].clip.shape[0]
    clips = np.concatenate([w.clip for w in due])  # (windows x crops, T, c, c, 3)
    began = time.monotonic()
    probabilities, _ = runner.run(clips)
    ready, wall = time.monotonic(), time.time()
    for i, window in enumerate(due):
        p = probabilities[i * crops:(i + 1) * crops].mean(axis=0)
        tally = tallies[window.source]
        tally.recent.append(p)
        tally.latencies.append(ready - window.arrived)
        result = {"source": readers[window.source].source.text, "start": window.start, "end": window.end,
                  "wall": round(wall, 3), "latency": round(ready - window.arrived, 4), "compute": round(ready - began, 4),
                  "top": runner.top(p, options.top), "averaged": runner.top(np.mean(tally.recent, axis=0), options.top),
                  "skipped": readers[window.source].skipped}
        if runner.net.random_weights:
            result["weights"] = "random"
        result["frame"] = window.frame  # (crop, crop, 3) uint8: not written to JSON
        result["probabilities"] = p
        yield result
