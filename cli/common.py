"""What every subcommand shares: calling the library and turning its errors into clean exits."""

import contextlib
import errno
import importlib.abc
import importlib.util
import os
import sys
import traceback

import click

from gan_seg.errors import InputError, RunError
from gan_seg.seg.views import VIEWS

EXIT_INPUT, EXIT_RUN, EXIT_INTERRUPTED = 2, 1, 130
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def call(ctx, function, *args, **kwargs):
    """Run a library function; InputError -> exit 2, failures of the work -> exit 1, one line on stderr.

    The library checks its arguments before it imports Keras, so a bad argument answers at once; without
    ``--verbose`` TensorFlow's start-up log lines are silenced."""
    verbose = bool(ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
    quiet = any(isinstance(finder, _QuietKerasImport) for finder in sys.meta_path)
    if not verbose and "keras" not in sys.modules and not quiet:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.meta_path.insert(0, _QuietKerasImport())
    try:
        return function(*args, **kwargs)
    except InputError as err:
        _fail(ctx, verbose, str(err), EXIT_INPUT)
    except RunError as err:
        _fail(ctx, verbose, str(err), EXIT_RUN)
    except KeyboardInterrupt:
        _fail(ctx, verbose, "interrupted", EXIT_INTERRUPTED)
    except MemoryError:
        _fail(ctx, verbose, "out of memory; lower --batch-size", EXIT_RUN)
    except OSError as err:
        reason = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        _fail(ctx, verbose, f"{reason}{where}", EXIT_RUN)
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, exit 1
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        _fail(ctx, verbose, f"{type(err).__name__}: {first} (run with --verbose for details)", EXIT_RUN)


class _QuietKerasImport(importlib.abc.MetaPathFinder):
    """Mutes C-level stderr while Keras (and the backend it starts) is first imported, whenever the library
    gets to it: TensorFlow prints start-up lines that its log-level variable does not always silence."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                with _muted_stderr():
                    run(module)

            spec.loader.exec_module = exec_module
        return spec


@contextlib.contextmanager
def _muted_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def brain_slice_options(command):
    """``--view``, ``--slice`` and ``--example``: the brain network and slice occlusion / features look at."""
    options = (
        click.option("--view", type=click.Choice(VIEWS),
                     help="Brain model: the view network. [default: axial]"),
        click.option("--slice", "slice_index", type=int,
                     help="Brain model: slice index on the conformed grid along the view's axis. "
                          "[default: middle]"),
        click.option("--example", is_flag=True, help="Brain model: use the shipped example brain as INPUT."),
    )
    for option in reversed(options):
        command = option(command)
    return command


def input_error(ctx, message):
    """Stop with ``message`` as an input error: one line on stderr, exit 2."""
    _fail(ctx, False, message, EXIT_INPUT)


def _fail(ctx, verbose, message, code):
    if verbose:
        traceback.print_exc()
    click.echo(f"gan-seg {ctx.info_name}: error: {message}", err=True)
    sys.exit(code)
