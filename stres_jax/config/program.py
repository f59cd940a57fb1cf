"""The absl/ml_collections programs (`python -m stres_jax.eval`, `python -m stres_jax.train`,
experiments/linear_probe.py): one-line errors, exit status 2, for bad flags, config files and
keys, and for the UserErrors of the run itself."""
import contextlib
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from stres_jax.errors import UserError, disk_full
from stres_jax.runtime.interrupt import Stopped


def one_line(error):
    """A flag or config error as one line (ml_collections' span several and nest a KeyError)."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(error, KeyError):  # "'rot'", 'Did you mean "root" instead of "rot"?'
        return "; ".join([f"no config key {lines[0]}", *lines[1:]])
    if "Failed loading config file" in text and lines[-1].startswith("["):  # "[Errno 2] No such file..."
        return lines[-1].split("] ", 1)[-1]
    return "; ".join(lines)


def fail(prog, message):
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def config_file():
    """The --config value on the command line (before flags are parsed), or "--config"."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1].split(":")[0]
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1].split(":")[0]
    return "--config"


def resolve_config_argument(prog):
    """Rewrite --config NAME in sys.argv to the file it names (stres_jax.config.named); say which."""
    from stres_jax.config.named import resolve
    args = sys.argv
    for i, arg in enumerate(args[1:], 1):
        if arg.startswith("--config="):
            value, at = arg.split("=", 1)[1], (i, "--config=")
        elif arg == "--config" and i + 1 < len(args):
            value, at = args[i + 1], (i + 1, "")
        else:
            continue
        name, _, overrides = value.partition(":")
        try:
            path, note = resolve(name)
        except UserError as err:
            fail(prog, err)
        if note:
            print(f"{prog}: {note}", file=sys.stderr)
        args[at[0]] = at[1] + path + (f":{overrides}" if overrides else "")
        return


def flags_parser(prog):
    """An `app.run(flags_parser=...)` that turns every flag or config-file mistake into one line."""
    def parse(argv):
        try:
            argv = flags.FLAGS(argv)
            if "config" in flags.FLAGS:  # a config file that failed to load raises on first use
                getattr(flags.FLAGS.config, "arch", None)
            return argv
        except SyntaxError as err:  # in the config file
            fail(prog, f"{err.filename}:{err.lineno}: {err.msg}")
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as err:
            message = one_line(err)
            if "'config_config' has no attribute 'get_config'" in message:  # ml_collections' name for the file
                message = f"{config_file()}: not a config file (it defines no get_config()); pass a packaged name (e.g. r2plus1d) or a config file"
            fail(prog, message)
        except Exception as err:  # noqa: BLE001 (raised by the config file's own code)
            fail(prog, f"the config file failed: {type(err).__name__}: {one_line(err)}")
    return parse


@contextlib.contextmanager
def user_errors(prog):
    """A UserError inside becomes one line and exit 2; a closed output pipe is quiet."""
    logging.set_verbosity(logging.WARNING)  # orbax reports every read at INFO
    try:
        yield
    except UserError as err:
        fail(prog, err)
    except Stopped as stopped:  # a signal cut the run short; its finished results are kept
        print(f"{prog}: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_status)
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and stops by itself)
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
    except Exception as err:  # a full disk is one line too; anything else is a bug: its traceback
        full = disk_full(err)
        if full is None:
            raise
        print(f"{prog}: error: {full}", file=sys.stderr, flush=True)
        os._exit(2)  # at once: orbax's writer threads would print their own tracebacks at exit


def run_program(prog, config_help, workdir_help, body, usage=None, default_config=None, random_init_key=None):
    """Define --config (locked) and --workdir, parse them, and call `body(config, workdir)`.
    `--help` prints `usage` and every field of `default_config()` with its description.
    `--random-init` (as every `stres-jax` command spells it) sets `config.<random_init_key>`."""
    if default_config is not None and any(arg in ("--help", "-h", "-help") for arg in sys.argv[1:]):
        from stres_jax.config.help import help_text
        try:
            print(help_text(prog, usage or "", default_config()))
        except BrokenPipeError:  # `--help | head`
            sys.stderr.close()
        sys.exit(0)
    resolve_config_argument(prog)
    config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    flags.DEFINE_string("workdir", None, workdir_help)
    if random_init_key:
        flags.DEFINE_boolean("random-init", False, f"torchvision's random weights (= --config.{random_init_key}=True)")
    flags.DEFINE_boolean("fresh", False, "delete the workdir's earlier results and start afresh (= --config.fresh=True)")

    def main(argv):
        if len(argv) > 1:
            fail(prog, f"unexpected argument {argv[1]!r}; pass --config FILE --workdir DIR [--config.KEY=VALUE]")
        config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
        if config is None or not workdir:
            fail(prog, "--config and --workdir are required (see --help)")
        if random_init_key and flags.FLAGS["random-init"].value:
            config[random_init_key] = True
        if flags.FLAGS.fresh:
            config.fresh = True
        with user_errors(prog):
            body(config, workdir)
    app.run(main, flags_parser=flags_parser(prog))
