"""User-facing errors: the CLI prints these as one line, without a traceback."""


def first_line(err):
    """The first line of an exception's message (its type's name if it has none): for one-line
    errors that quote what a library raised."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class UserError(Exception):
    """Bad input from the user: the message names the file or key and says what to do."""


def disk_full(err):
    """The one-line UserError for an exception that says the disk is full (an OSError with ENOSPC, or
    a library's error quoting it, as orbax's do), else None."""
    import errno
    import shutil
    from pathlib import Path
    chain, seen = err, 0
    while chain is not None and seen < 8:
        if (isinstance(chain, OSError) and chain.errno == errno.ENOSPC) or "No space left on device" in str(chain):
            name = getattr(chain, "filename", None) or getattr(err, "filename", None)
            try:
                free = f"; {shutil.disk_usage(Path(name).parent).free:,} bytes free there" if name else ""
            except OSError:
                free = ""
            where = f"{name}: " if name else ""
            return UserError(f"{where}no space left on the disk{free}; free some space or write elsewhere, "
                             "then run the same command again (what is finished is kept)")
        chain, seen = chain.__cause__ or chain.__context__, seen + 1
    return None
