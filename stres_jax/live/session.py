"""One `stres-jax live` run: the net, the sources' loop, its outputs and its end (a summary per
source; exit 0, 1 if a source failed, 130 / 143 after SIGINT / SIGTERM)."""
import contextlib
import fcntl
import os
import sys
import threading

import numpy as np

from stres_jax.errors import UserError
from stres_jax.inference import ClipRunner, batch_sizes
from stres_jax.live.loop import LiveOptions, recognize
from stres_jax.live.report import Screen, json_line, summary_lines
from stres_jax.loader import ModelOptions, load_net
from stres_jax.runtime.atomic import check_output
from stres_jax.runtime.interrupt import GracefulStop


def serve_address(text):
    """HOST:PORT (or PORT: loopback) -> (host, port), or a one-line error."""
    host, _, port = (text or "").rpartition(":")
    host = host or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"--serve {text}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def locked_jsonl(path):
    """`path` opened for this run's lines, locked so that a second run into it is refused in one
    line instead of interleaving its lines with this one's (truncated only once the lock is held)."""
    created = not os.path.lexists(path)
    with open(path, "a", buffering=1) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"--jsonl {path}: another stres-jax live run is writing it; give another file") from None
        file.truncate(0)
        try:
            yield file
        except BaseException:
            if created and file.tell() == 0:
                os.unlink(path)  # a run that failed before its first window leaves no empty file behind
            raise


def warm_up(runner, clip_len, most):
    """Compile the net for every batch a run can make (1 to `most` windows), before any frame
    arrives: a compile inside the loop would be latency."""
    crop = runner.model.preset.crop
    for size in sorted({s for n in range(1, most + 1) for s in batch_sizes(n, runner.batch_size)}):
        runner.run(np.zeros((size, clip_len, crop, crop, 3), np.uint8))


class LiveSession:
    def __init__(self, args, sources):
        self.args, self.sources = args, sources
        self.options = LiveOptions(args.clip_len, args.stride, args.crops, args.average, not args.no_skip,
                                   args.realtime, args.stall_timeout, args.retries, args.top)
        self.address = serve_address(args.serve) if args.serve else None
        if args.jsonl and args.jsonl != "-":
            check_output(args.jsonl, "jsonl", args.overwrite, [s.text for s in sources if s.kind == "file"], "--jsonl")

    def run(self):
        with contextlib.ExitStack() as stack:
            out = self._jsonl(stack)  # locked before the net loads: a second run into it is refused at once
            return self._run(stack, out)

    def _run(self, stack, out):
        args = self.args
        screen = Screen([s.text for s in self.sources], sys.stderr if args.jsonl == "-" else sys.stdout)
        runner = ClipRunner(load_net(ModelOptions.from_args(args)), len(self.sources) * args.crops)
        clip_len, stride = self.options.window(runner.model.preset)
        warm_up(runner, clip_len, len(self.sources) * args.crops)
        rate = runner.model.preset.frame_rate
        print(f"stres-jax live: reading {len(self.sources)} source(s): windows of {clip_len} frames every "
              f"{stride} at {f'{rate:g} fps' if rate else 'the native rate'}"
              f"{'' if self.options.skip else ', none skipped'}; Ctrl-C ends", file=sys.stderr, flush=True)
        stop, tallies, reported = threading.Event(), [], set()
        page = self._page(stack, runner)
        signals = stack.enter_context(GracefulStop("stres-jax live", "ending the sources, then the summary",
                                                   on_stop=stop.set))
        for result in recognize(self.sources, runner, self.options, stop, screen.say, tallies):
            if out is not None:
                out.write(json_line(result) + "\n")
                out.flush()
            screen.show(result)
            if page is not None:
                page.update(result)
            self._errors(tallies, reported, screen)
        self._errors(tallies, reported, screen)
        summaries = [tally.summary(reader) for reader, tally in tallies]
        for line in summary_lines(summaries):
            print(line, file=sys.stderr, flush=True)
        if signals:
            return signals.exit_status
        return 1 if any(s["error"] for s in summaries) else 0

    def _errors(self, tallies, reported, screen):
        """A source that failed: its one line, once."""
        for reader, _ in tallies:
            if reader.done and reader.error and reader.position not in reported:
                reported.add(reader.position)
                screen.say(f"stres-jax live: error: {reader.error}")

    def _jsonl(self, stack):
        if not self.args.jsonl:
            return None
        if self.args.jsonl == "-":
            return sys.stdout
        return stack.enter_context(locked_jsonl(self.args.jsonl))

    def _page(self, stack, runner):
        if self.address is None:
            return None
        from stres_jax.live.page import LivePage
        page = stack.enter_context(LivePage(self.address, [s.text for s in self.sources], list(runner.labels)))
        print(f"stres-jax live: the page is at {page.url}", file=sys.stderr, flush=True)
        return page

