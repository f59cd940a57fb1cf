"""Keep absl's log lines (orbax's, TFDS's) off the user's terminal where they only repeat or
precede an error that is reported in one line."""
import contextlib
import logging


@contextlib.contextmanager
def quiet_absl(level=logging.CRITICAL):
    """Drop absl log records below `level` inside the block."""
    logger = logging.getLogger("absl")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
