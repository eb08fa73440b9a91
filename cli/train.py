"""``gan-seg train``: start a run (DCGAN, CGAN, QuickNAT, U-Net), or continue one with ``--resume``.

The options are generated from the families' config fields (:func:`gan_seg.engine.options.option`): one
flag per field, its help and defaults from the field, merged over the families that have it.
"""

import dataclasses
import typing

import click
from click.core import ParameterSource

from gan_seg import api
from gan_seg.engine.options import flag_of
from gan_seg_cli.common import CONTEXT, call


def _image_shape(ctx, param, value):
    if value is None:
        return None
    try:
        parts = tuple(int(p) for p in value.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise click.BadParameter("expected HxWxC, e.g. 28x28x1 or 64x64x3")
    return parts


def _none_choice(ctx, param, value):
    return None if value == "none" else value


def _shown(field):
    if field.metadata["default_text"]:
        return field.metadata["default_text"]
    default = field.default
    if isinstance(default, bool):
        return "on" if default else "off"
    return ",".join(default) if isinstance(default, tuple) else default


def _help(entries):
    """Help of one flag: its text (per family when they differ) and the default(s)."""
    texts = {field.metadata["help"] for _, field in entries}
    if len(texts) == 1:
        text = texts.pop()
    else:
        text = " ".join(f"{family.name}: {field.metadata['help']}" for family, field in entries)
    defaults = [(family.name, _shown(field)) for family, field in entries]
    if all(d is None for _, d in defaults):
        return text
    if len(entries) == len(api.FAMILIES) and len({d for _, d in defaults}) == 1:
        return f"{text} [default: {defaults[0][1]}]"
    if len(entries) == 1:
        return f"{text} [{defaults[0][0]} default: {defaults[0][1]}]"
    return f"{text} [default: {', '.join(f'{d} ({name})' for name, d in defaults)}]"


def _value_type(field):
    """int, float or str from the field's annotation (``float | None`` -> float)."""
    kinds = [kind for kind in typing.get_args(field.type) if kind is not type(None)] or [field.type]
    return kinds[0] if kinds[0] in (int, float) else str


def _option(flag, entries):
    field = entries[0][1]
    kind, choices = field.metadata["type"], field.metadata["choices"]
    extra = {}
    if kind is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", field.name], default=None, help=_help(entries))
    if kind == "shape":
        extra["callback"] = _image_shape
    elif choices:
        extra["type"] = click.Choice(["none" if c is None else c for c in choices])
        if None in choices:  # "none" on the command line stands for None (e.g. --se none)
            extra["callback"] = _none_choice
    elif kind != "list":
        extra["type"] = _value_type(field)
    return click.Option([flag, field.name], help=_help(entries), **extra)


def config_options():
    """click options for every config field with a flag, in field order, merged across families."""
    merged = {}
    for family in api.FAMILIES:
        for field in dataclasses.fields(family.config):
            if flag_of(field):
                merged.setdefault(flag_of(field), []).append((family, field))
    return [_option(flag, entries) for flag, entries in merged.items()]


@click.command(context_settings=CONTEXT)
@click.option("--model", type=click.Choice(list(api.MODELS)), help="Architecture to train. [default: dcgan]")
@click.option("--out", type=click.Path(), help="Run directory to create (must be new or empty).")
@click.option("--resume", type=click.Path(), help="Continue this run directory (GAN: up to --steps; "
              "QuickNAT: the remaining views, optionally to more --epochs).")
@click.option("--force", is_flag=True, help="Start over in a non-empty --out directory.")
@click.option("--quiet", is_flag=True, help="No progress line.")
@click.pass_context
def command(ctx, out, resume, force, quiet, **options):
    """Train a model; runs are saved in --out and resumable.

    \b
    gan-seg train --model cgan --data fashion-mnist --steps 2000 --out runs/cgan
    gan-seg train --resume runs/cgan --steps 4000
    gan-seg train --model quicknat --data brains/ --filters 16 --epochs 8 --out runs/qn
    gan-seg train --model quicknat --data manual/ --init runs/qn --lr 1e-5 --out runs/qn-ft
    """
    given = {name: value for name, value in options.items()
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    if resume is not None:
        extra = [api.flag(name) for name in sorted(set(given) - {"steps", "epochs"})]
        extra += (["--out"] if out else []) + (["--force"] if force else [])
        if extra:
            raise click.UsageError(f"--resume continues a run with its own config; drop {', '.join(extra)}")
        path = call(ctx, api.resume, resume, steps=given.get("steps"), epochs=given.get("epochs"),
                    progress=not quiet)
    else:
        if out is None:
            raise click.UsageError("--out RUN_DIR is required (or --resume RUN_DIR)")
        path = call(ctx, api.train, given, out, force=force, progress=not quiet)
    click.echo(f"run saved in {path}" if path else "done; the chief worker saved the run, not this one")


command.params[1:1] = config_options()
