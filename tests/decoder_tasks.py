"""Worker tasks that misbehave as broken decoders do (a light module: workers import it)."""
import os
import signal
import time


def crash_task(_):
    os.kill(os.getpid(), signal.SIGSEGV)  # what a bug in a C decoder does
    yield None


def hang_task(_):
    time.sleep(3600)
    yield None


def hungry_task(_):
    yield bytearray(8 * 2**30)  # 8 GB
