"""One thread per source: frames in, resampled and resized at once, windows out.

Only the frames of the newest window are held (plus one stride), so memory does not grow with the
stream. With skipping, a finished window that the net has not taken yet is replaced by the next
one and counted as skipped: the net always gets the newest frames. Without it, the reader waits
for the net (offline-exact, for files and pipes)."""
import collections
import dataclasses
import threading
import time

import numpy as np

from stres_jax.data.views import frame_views
from stres_jax.live.resample import Resampler
from stres_jax.live.sources import SourceError, segment_frames

BACKOFF_S = (1, 2, 4, 8, 16)
JUMP_S = 5.0  # a timestamp further ahead than this is a discontinuity, not a pause


@dataclasses.dataclass
class Window:
    source: int        # the source's position on the command line
    number: int        # windows of this source so far, skipped ones counted
    start: float       # stream seconds of its first frame
    end: float         # stream seconds after its last frame
    clip: np.ndarray   # (crops, T, crop, crop, 3) uint8
    arrived: float     # time.monotonic() when its last frame was decoded
    frame: np.ndarray  # its newest frame, resized (for the page)


class SourceReader:
    """Reads `source` in a daemon thread; the loop takes windows with `take()`."""

    def __init__(self, position, source, preset, clip_len, stride, crops, skip, wake, stall_timeout=10.0,
                 retries=5, realtime=False, say=print):
        self.position, self.source, self.preset = position, source, preset
        self.clip_len, self.stride, self.crops, self.skip = clip_len, stride, crops, skip
        self.wake, self.stall_timeout, self.retries, self.realtime, self.say = wake, stall_timeout, retries, realtime, say
        self.pending = collections.deque()   # finished windows the net has not taken (at most 1 with skipping)
        self.skipped = self.windows = 0
        self.stream_seconds = 0.0
        self.error, self.done, self.ended = None, False, None  # ended: why a network stream stopped
        self.stop, self.delivered, self.frames_read = threading.Event(), False, 0
        self._last_views = (None, None)
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"live-{position}", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def take(self):
        """The window due for the net, or None."""
        with self.wake:
            window = self.pending.popleft() if self.pending else None
            self.wake.notify_all()
            return window

    def _publish(self, window):
        with self.wake:
            if self.skip and self.pending:
                self.pending.popleft()
                self.skipped += 1
            while not self.skip and not self.source.live and len(self.pending) >= 2 and not self.stop.is_set():
                self.wake.wait(0.1)  # --no-skip on a file or pipe: the reader waits for the net
            self.pending.append(window)
            self.wake.notify_all()

    def _run(self):
        try:
            self._read()
        except SourceError as err:
            self.error = str(err)
        except Exception as err:  # noqa: BLE001 (a decoder fault ends this source only)
            self.error = f"{self.source.text}: unreadable stream ({type(err).__name__}: {err})"
        finally:
            with self.wake:
                self.done = True
                self.wake.notify_all()

    def _read(self):
        """Segments until the stream ends; a network drop, stall or refusal is retried with backoff."""
        attempt, offset = 0, 0.0
        while not self.stop.is_set():
            self.delivered = False
            try:
                self._segment(offset)
                reason = f"{self.source.text}: the stream ended"
                if not self.source.live:
                    return  # a file, a pipe or an http stream that ended: the end
            except SourceError as err:
                if not err.retry or (attempt >= self.retries and not self.frames_read):
                    raise  # never a video, or never reached
                reason = str(err)
            if self.delivered:
                attempt, offset = 0, time.monotonic() - self.started  # it ran: a fresh count of retries
            if attempt >= self.retries:
                self.ended = reason  # it ran, then stopped for good: its end, not a failure
                return
            wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            self.say(f"stres-jax live: {reason}; retry {attempt} of {self.retries} in {wait} s")
            if self.stop.wait(wait):
                return

    def _segment(self, offset):
        """Read one segment; windows never span two. A timestamp that jumps back, or ahead by more
        than JUMP_S (a new stream on the same pipe, a broadcast's splice), starts a new window run."""
        held, resampler, last = collections.deque(maxlen=self.clip_len), None, None
        interval = 1 if self.preset.frame_rate else self.preset.frame_interval  # mmaction2's: every k-th native frame
        for seconds, fps, rgb in segment_frames(self.source, self.stall_timeout, self.realtime):
            if self.stop.is_set():
                return
            arrived = time.monotonic()
            if last is not None and not 0 < seconds - last[0] <= JUMP_S:
                self._release(held, resampler.end(), interval)
                offset += last[0] + 1.0 / (last[1] or 25) - seconds  # stream time goes on from where it was
                held, resampler = collections.deque(maxlen=self.clip_len), None
            resampler = resampler or Resampler(fps, self.preset.frame_rate)
            last = (seconds, fps)
            self.delivered = True
            self.frames_read += 1
            self.stream_seconds = offset + seconds
            self._release(held, resampler.push(offset + seconds, rgb), interval, arrived)
        if resampler is not None:
            self._release(held, resampler.end(), interval)

    def _release(self, held, ticks, interval, arrived=None):
        for tick, at, frame in ticks:
            if tick % interval == 0:
                self._frame(held, tick // interval, at, frame, arrived or time.monotonic())

    def _frame(self, held, tick, at, rgb, arrived):
        if self._last_views[0] is not rgb:  # a frame repeated by upsampling is resized once
            self._last_views = (rgb, frame_views(rgb, self.preset, self.crops))
        views = self._last_views[1]
        held.append((at, views))
        if tick + 1 >= self.clip_len and (tick + 1 - self.clip_len) % self.stride == 0:
            clip = np.stack([v for _, v in held], axis=1)  # (crops, T, c, c, 3)
            period = 1.0 / self.preset.frame_rate if self.preset.frame_rate else 0.0
            self.windows += 1
            self._publish(Window(self.position, self.windows, round(held[0][0], 3), round(at + period, 3), clip,
                                 arrived, views[len(views) // 2]))
