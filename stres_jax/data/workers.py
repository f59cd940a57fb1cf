"""Decoding in worker processes, so that a decoder that crashes, hangs or eats memory costs one
video, not the run: each task has a time bound (no message for `timeout` seconds) and each
worker a memory bound (RLIMIT_AS); a worker that dies or overruns is killed and replaced, and
its video gets a one-line VideoError. Used by predict, eval, embed and training (probe, clips).

Workers are fresh interpreters (`python -m stres_jax.data.workers FD MEMORY`), not forks or
multiprocessing children: they never inherit JAX's threads or re-run the caller's script, and
grain's daemonic data workers may start them too."""
import collections
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection, Pipe, wait

from stres_jax.data.decode import VideoError
from stres_jax.errors import UserError

DEFAULT_TIMEOUT = float(os.environ.get("STRES_JAX_DECODE_TIMEOUT", 300))     # seconds without progress
DEFAULT_MEMORY = int(float(os.environ.get("STRES_JAX_DECODE_MEMORY_GB", 8)) * 2**30)  # per worker


def memory_bound(memory):
    """The decoders' address-space bound: `memory`, or the inherited hard limit (`ulimit -v`) if
    that is lower (a process may lower its limits, never raise them)."""
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    return memory if hard == resource.RLIM_INFINITY else min(memory, hard) if memory else hard


_told = []


def _say_bound(memory):
    """One line, once per process, when `ulimit -v` lowers the decoders' memory bound."""
    bound = memory_bound(memory)
    if memory and bound < memory and not _told:
        _told.append(bound)
        print(f"stres_jax: decoding workers are limited to {bound / 2**30:.1f} GB by the address-space limit "
              f"(ulimit -v) instead of {memory / 2**30:g} GB; a video needing more is skipped", file=sys.stderr)


def _worker(connection, memory):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the caller stops us
    if memory:
        bound = memory_bound(memory)
        resource.setrlimit(resource.RLIMIT_AS, (bound, resource.getrlimit(resource.RLIMIT_AS)[1]))
    connection.send(("ready", None))
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            fn, args = task
            for value in fn(*args):
                connection.send(("value", value))
            connection.send(("done", None))
        except UserError as err:
            connection.send(("error", str(err)))
        except MemoryError:
            connection.send(("error", f"needs more than the decoder's {memory / 2**30:g} GB memory bound"))
        except Exception as err:  # noqa: BLE001 (any decoder failure is this video's, not the run's)
            last = traceback.extract_tb(err.__traceback__)[-1]
            connection.send(("error", f"{type(err).__name__}: {err} (in {os.path.basename(last.filename)})"))


def _wait(process, seconds):
    """The process's exit status after at most `seconds`, or None if it still runs."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


class DecodeWorkers:
    """A pool of decoding processes. `run(key, fn, *args)` yields the values of the generator
    `fn(*args)` computed in a worker, or raises a VideoError naming `key`."""

    def __init__(self, count=1, timeout=DEFAULT_TIMEOUT, memory=DEFAULT_MEMORY):
        self.timeout, self.memory = timeout, memory
        _say_bound(memory)
        self._lock = threading.Lock()
        started = [self._launch() for _ in range(max(count, 1))]
        self._idle = collections.deque(self._ready(worker) for worker in started)
        self._all = list(self._idle)
        self.stopping = False

    def stop(self):
        """End every worker now and start no more (a stopped run); their callers get a VideoError."""
        self.stopping = True
        for process, _ in list(self._all):
            process.kill()

    def _launch(self):
        parent, child = Pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the caller's modules
        process = subprocess.Popen([sys.executable, "-m", "stres_jax.data.workers", str(child.fileno()),
                                    str(self.memory)], pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        child.close()
        return process, parent

    @staticmethod
    def _ready(worker, timeout=120):
        process, connection = worker
        try:
            if connection.poll(timeout) and connection.recv()[0] == "ready":
                return worker
        except (EOFError, OSError):
            pass
        process.kill()
        raise UserError("a decoding worker process did not start (see the messages above)")

    def _start(self):
        return self._ready(self._launch())

    def _replace(self, worker):
        process, connection = worker
        process.kill()
        process.wait()
        connection.close()
        if self.stopping:
            raise VideoError("decoding stopped")
        with self._lock:
            fresh = self._start()
            if worker in self._all:
                self._all[self._all.index(worker)] = fresh
            else:  # already closed or replaced (an interrupted caller): still stopped by close()
                self._all.append(fresh)
        return fresh

    def run(self, key, fn, *args):
        if self.stopping:
            raise VideoError(f"{key}: decoding stopped")
        with self._lock:
            if self._idle:
                worker = self._idle.popleft()
            else:  # more callers than workers: one more, known to _replace and close
                worker = self._start()
                self._all.append(worker)
        process, connection = worker
        finished = False
        try:
            connection.send((fn, args))
            while True:
                ready = wait([connection], self.timeout)  # a dead worker's pipe reads as EOF
                if not ready:
                    worker = self._replace(worker)
                    raise VideoError(f"{key}: decoding made no progress for {self.timeout:g} s; skipped "
                                     "(STRES_JAX_DECODE_TIMEOUT sets the bound)")
                try:
                    if connection not in ready:
                        raise EOFError
                    kind, value = connection.recv()
                except (EOFError, OSError):
                    code = _wait(process, 5)
                    worker = self._replace(worker)
                    how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                    raise VideoError(f"{key}: the decoder crashed ({how}); skipped") from None
                if kind == "value":
                    yield value
                    continue
                finished = True
                if kind == "done":
                    return
                raise VideoError(value if value.startswith(str(key)) else f"{key}: {value}")
        finally:
            if self.stopping:
                pass  # stop() ended the workers; close() reaps them
            elif not finished and worker[0] is process:  # abandoned mid-task: it may still be sending
                self._idle.append(self._replace(worker))
            else:
                self._idle.append(worker)

    def close(self):
        for process, connection in self._all:
            try:
                connection.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + (0 if self.stopping else 2)
        for process, connection in self._all:
            if _wait(process, max(deadline - time.monotonic(), 0)) is None:
                process.kill()
                process.wait()
            connection.close()
        self._all, self._idle = [], collections.deque()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":  # a worker: python -m stres_jax.data.workers FD MEMORY_BYTES
    _worker(Connection(int(sys.argv[1])), int(sys.argv[2]))
