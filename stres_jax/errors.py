"""User-facing errors: the CLI prints these as one line, without a traceback."""


def first_line(err):
    """The first line of an exception's message (its type's name if it has none): for one-line
    errors that quote what a library raised."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class UserError(Exception):
    """Bad input from the user: the message names the file or key and says what to do."""
