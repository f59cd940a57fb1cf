"""Ctrl-C and SIGTERM in a long run: the first says at once what is being finished (and that a
second Ctrl-C stops now); the run then starts no new work and ends with its finished results
kept. A second Ctrl-C ends the process at once: every output is written atomically (a staging
file at worst, which the next run removes), so nothing is left half-written.

"At once" even while the main thread waits in a long XLA computation: the C-level handler
writes each signal to a pipe (`signal.set_wakeup_fd`) that a watcher thread reads."""
import os
import shlex
import signal
import sys
import threading

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class GracefulStop:
    """`with GracefulStop(prog, "stopping after the windows in flight") as stop:` ... `if stop:`.
    `on_stop` (optional, settable later) runs at the first signal, in the watcher thread
    (e.g. to end the decoders); `on_exit` runs before a second Ctrl-C ends the process."""

    def __init__(self, prog, finishing, on_stop=None, on_exit=None):
        self.prog, self.finishing, self.on_stop, self.on_exit = prog, finishing, on_stop, on_exit
        self.signals, self._lock, self._pipe = [], threading.Lock(), None

    def __bool__(self):
        return bool(self.signals)

    @property
    def exit_status(self):
        return EXIT_STATUS.get(self.signals[0], 128 + self.signals[0]) if self.signals else 0

    @property
    def name(self):
        return signal.Signals(self.signals[0]).name if self.signals else ""

    def _note(self, number):
        with self._lock:
            first = not self.signals
            self.signals.append(number)
        if first:
            again = "Ctrl-C again to stop now" if number == signal.SIGINT else "Ctrl-C (SIGINT) to stop now"
            print(f"{self.prog}: {signal.Signals(number).name}: {self.finishing}; {again}", file=sys.stderr, flush=True)
            if self.on_stop is not None:
                self.on_stop()
        elif number == signal.SIGINT:
            print(f"{self.prog}: stopped now", file=sys.stderr, flush=True)
            if self.on_exit is not None:
                self.on_exit()
            import multiprocessing
            from stres_jax.runtime.atomic import remove_staging
            for child in multiprocessing.active_children():  # grain's workers ignore signals: end them
                child.kill()
            remove_staging()  # nothing half-written is left, not even a staging file
            os._exit(130)

    def _watch(self, read_end):
        while True:
            try:
                data = os.read(read_end, 16)
            except OSError:
                return
            if not data:
                return
            for number in data:
                if number in EXIT_STATUS:
                    self._note(number)

    def __enter__(self):
        self.previous, self.previous_fd = {}, None
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            return self
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self.previous = {sig: signal.signal(sig, lambda *_: None) for sig in EXIT_STATUS}  # the watcher acts
        self.previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_end,), daemon=True).start()
        return self

    def __exit__(self, *exc):
        if self._pipe is None:
            return
        signal.set_wakeup_fd(self.previous_fd)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        os.close(self._pipe[1])  # the watcher reads EOF and ends
        self._pipe = None


class Stopped(Exception):
    """A run that a signal cut short after keeping its finished results: `str` is the one line
    to print (with the command that resumes), `exit_status` 130 or 143."""

    def __init__(self, message, exit_status):
        super().__init__(message)
        self.exit_status = exit_status


def resume_command():
    """The command line that runs this one again, as it was typed (`sys.orig_argv`: before any
    rewriting of sys.argv): `stres-jax ...` or `python -m stres_jax.eval ...`."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if "-m" in argv[1:]:
        at = argv.index("-m", 1)
        module = argv[at + 1] if at + 1 < len(argv) else ""
        prog, args = "stres-jax" if module == "stres_jax.cli" else f"python -m {module}", argv[at + 2:]
    else:
        script = next((i for i, arg in enumerate(argv[1:], 1) if not arg.startswith("-")), len(argv) - 1)
        prog, args = os.path.basename(argv[script]), argv[script + 1:]
    return " ".join([prog, shlex.join(args)]).strip()
