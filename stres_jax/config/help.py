"""`--help` of the config programs: the command, then every config field with its default and
the comment it has in `stres_jax/config/base.py` (the one place fields are described)."""
import inspect
import re

from stres_jax.config import base as config_base

_FIELD = re.compile(r"^\s*config((?:\.\w+)+)\s*=\s*[^#]*?(?:#\s*(.*))?$")
_MORE = re.compile(r"^\s*#\s+(.*)$")


def field_comments():
    """{"data.root": "folder of videos ...", ...} from config_base.py's source comments."""
    comments, last = {}, None
    for line in inspect.getsource(config_base).splitlines():
        field, more = _FIELD.match(line), _MORE.match(line)
        if field:
            last = field.group(1)[1:]
            if field.group(2) and last not in comments:
                comments[last] = field.group(2).strip()
        elif more and last in comments:
            comments[last] += " " + more.group(1).strip()
        else:
            last = None
    return comments


def _flatten(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def help_text(prog, usage, config):
    """The whole `--help` text for `config` (a default config of the program)."""
    comments = field_comments()
    for alias, block in (("data", "validation.data"), ("protocol", "validation.protocol"),
                         ("distributed", "distributed")):
        comments.update({f"{block}.{k[len(alias) + 1:]}": v for k, v in list(comments.items())
                         if k.startswith(alias + ".") and f"{block}.{k[len(alias) + 1:]}" not in comments})
    command = f"python -m {prog}" if prog.startswith("stres_jax.") else prog  # or `stres-jax eval`
    rows = [f"  --config.{key}={value!r}" + (f"\n      {comments[key]}" if key in comments else "")
            for key, value in _flatten(config)]
    return "\n".join([f"usage: {command} --config FILE --workdir DIR [--config.KEY=VALUE ...]", "",
                      usage, "", "config fields (the defaults of stres_jax/config/base.py; a config file may "
                      "change them):", *rows, "", "absl's own flags: --helpfull"])
