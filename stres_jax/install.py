"""How this package was installed, for hints that name commands the user has."""
from pathlib import Path

CLONE = Path(__file__).resolve().parent.parent


def in_clone():
    """True when running from a source checkout (an editable install of the repository)."""
    return (CLONE / "pyproject.toml").is_file() and (CLONE / ".git").exists()


def pip_extra(extra):
    """The command that installs an optional extra, as this installation takes it."""
    return f'pip install -e "{CLONE}[{extra}]"' if in_clone() else f'pip install "stres-jax[{extra}]"'
