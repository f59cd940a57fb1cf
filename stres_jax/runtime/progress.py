"""Progress on long work: a tqdm bar on a terminal, and elsewhere (nohup, SLURM logs) a plain
line every STRES_JAX_LOG_EVERY seconds (default 60) and at the end."""
import os
import sys
import time

from tqdm import tqdm


def log_every():
    return float(os.environ.get("STRES_JAX_LOG_EVERY", 60))


def progress(total=None, desc="", unit="it", show=True, initial=0, leave=True, timed=True):
    """A tqdm bar when stderr is a terminal, LogLines when it is not, nothing without `show`.
    `timed=False`: plain lines only when the caller asks (`line()`), e.g. every log_every_steps."""
    if show and not sys.stderr.isatty():
        return LogLines(total, desc, unit, initial, timed)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=not show)


class LogLines:
    """tqdm's update / set_postfix / write / close, printed as plain timestamped lines."""

    def __init__(self, total, desc, unit, initial=0, timed=True):
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.start = self.last = time.monotonic()
        self.timed, self.postfix, self.shown = timed, "", None

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if self.timed and now - self.last >= log_every():
            self.last = now
            self._line(now)

    def line(self):
        """A line now (tqdm has no such call: callers check for LogLines)."""
        self._line(time.monotonic())

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def set_postfix_str(self, text):
        self.postfix = text

    @staticmethod
    def write(text, file=None):
        print(text, file=file or sys.stderr, flush=True)

    def _line(self, now):
        self.shown = self.n
        rate = (self.n - self.initial) / max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        extra = f", {self.postfix}" if self.postfix else ""
        if self.total is not None and rate > 0 and self.n < self.total:
            extra += f", ETA {time.strftime('%H:%M:%S', time.gmtime((self.total - self.n) / rate))}"
        print(f"{time.strftime('%H:%M:%S')} {self.desc}: {self.n}{of} {self.unit} ({rate:.3g} {self.unit}/s{extra})",
              file=sys.stderr, flush=True)

    def close(self):
        if self.n > self.initial and self.last != -1 and self.shown != self.n:
            self._line(time.monotonic())
        self.last = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
