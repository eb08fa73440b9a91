"""Exception types of the library; the CLI maps them to exit codes (input 2, run 1)."""


class GanSegError(Exception):
    """Base class of every error the library raises on purpose."""


class InputError(GanSegError, ValueError):
    """Something the user passed is wrong (option, input file, output path, model file)."""


class RunError(GanSegError, RuntimeError):
    """The work itself failed (disk full, out of memory, a worker died)."""
