"""What `stres-jax live` shows: a live line per source in a terminal (plain lines elsewhere), JSON
lines flushed per window, and each source's summary at the end."""
import json
import sys

JSON_KEYS = ("source", "start", "end", "wall", "latency", "compute", "top", "averaged", "skipped", "weights")


def json_line(result):
    """The window as one JSON line (`JSON_KEYS`; the numpy frame and probabilities stay out)."""
    return json.dumps({key: result[key] for key in JSON_KEYS if key in result})


def window_line(result):
    """One window in words: source, stream span, label, averaged label, latency, skips."""
    best, averaged = result["top"][0], result["averaged"][0]
    random = " [random weights]" if result.get("weights") == "random" else ""
    return (f"{result['source']}  {result['start']:8.2f}-{result['end']:.2f} s  {best['label']} "
            f"({best['probability']:.2f})  averaged: {averaged['label']} ({averaged['probability']:.2f})  "
            f"latency {result['latency']:.2f} s  skipped {result['skipped']}{random}")


class Screen:
    """In a terminal, one line per source, redrawn in place; elsewhere, a line per window."""

    def __init__(self, sources, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.lines = {source: f"{source}  waiting for frames" for source in sources}
        self.drawn = 0

    def show(self, result):
        line = window_line(result)
        if not self.live:
            print(line, file=self.stream, flush=True)
            return
        self.lines[result["source"]] = line
        self.redraw()

    def say(self, message):
        """A one-line message (a retry, an error) above the live lines."""
        if self.live and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0
        print(message, file=sys.stderr, flush=True)  # errors and retries: stderr, whatever the windows' stream
        if self.live:
            self.redraw()

    def redraw(self):
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{line[:200]}\n" for line in self.lines.values()))
        self.stream.flush()
        self.drawn = len(self.lines)


def summary_lines(summaries):
    """Per source: windows, skipped, latency p50 / p95 / max, the real-time factor, or its error."""
    lines = []
    for s in summaries:
        latency = ("latency p50 / p95 / max {latency_p50:.3f} / {latency_p95:.3f} / {latency_max:.3f} s"
                   .format(**s) if s["windows"] else "no window answered")
        line = (f"{s['source']}: {s['windows']} windows, {s['skipped']} skipped, {latency}, "
                f"{s['stream_seconds']:.1f} s of stream at {s['realtime_factor']:.2f}x real time")
        lines.append(line + (" (failed: its error is above)" if s["error"] else ""))
    return lines
