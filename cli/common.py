"""What every subcommand shares: calling the library and turning its errors into clean exits."""

import errno
import os
import sys
import traceback

import click

from gan_seg.errors import InputError, RunError

EXIT_INPUT, EXIT_RUN, EXIT_INTERRUPTED = 2, 1, 130
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def call(ctx, function, *args, needs_keras=True, **kwargs):
    """Run a library function; InputError -> exit 2, failures of the work -> exit 1, one line on stderr."""
    verbose = bool(ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
    if needs_keras and not verbose:
        _quiet_keras_import()
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


def _quiet_keras_import():
    """Import Keras (and its backend) with C-level stderr muted: TensorFlow prints start-up lines that
    its log-level variable does not silence."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras  # noqa: F401, PLC0415 - the seam: the backend starts here, with its noise muted
    except Exception:  # noqa: BLE001 - a broken install is reported by the real import later
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def input_error(ctx, message):
    """Stop with ``message`` as an input error: one line on stderr, exit 2."""
    _fail(ctx, False, message, EXIT_INPUT)


def _fail(ctx, verbose, message, code):
    if verbose:
        traceback.print_exc()
    click.echo(f"gan-seg {ctx.info_name}: error: {message}", err=True)
    sys.exit(code)
