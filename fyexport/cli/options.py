"""Click options made from the stages' configurations.

Every default is read from the configuration that holds it (written once there), and each
command knows which of its flags sets which field, so a library error naming a field
(``recover.batch must be >= 1``) reaches the user naming the flag they typed
(``--recover-batch must be >= 1``)."""
from __future__ import annotations

import contextlib
import functools
import types
import typing

import click

from ..core.config import ConfigError, default_at, field_type, make_config, rename_fields
from ..core.errors import FyexportError
from ..core.imgsize import parse_img_size
from ..core.log import G_LOGGER


class ImgSizeType(click.ParamType):
    """``--img-size``: N, H,W or HxW."""

    name = "N|H,W"

    def convert(self, value, param, ctx):
        try:
            return parse_img_size(value)
        except ConfigError as e:
            self.fail(e.problem, param, ctx)


class BatchListType(click.ParamType):
    """``--batch 1,8,32``: a tuple of positive batch sizes."""

    name = "B[,B...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)


IMG_SIZE, BATCH_LIST = ImgSizeType(), BatchListType()
SCALARS = (bool, int, float, str)


def _click_type(annotation, path: str):
    """The click type for a field's annotation (``int | None`` -> int)."""
    if path.endswith("img_size"):
        return IMG_SIZE
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if len(args) == 1 and isinstance(annotation, types.UnionType) else annotation
    return base if base in SCALARS else None


def _show(value: tuple) -> str:
    """A tuple default as the user would type it (``1,8,32``)."""
    return ",".join(map(str, value))


class Fields:
    """The options of one command, each bound to a field of the command's configuration."""

    def __init__(self, root: type, runs: "tuple[Fields, str, dict] | None" = None):
        """``runs``: (the options of the command this one runs, that command's name, {its field:
        this command's field}): messages naming the other command's fields name this command's
        flag where it has one, else the other command with its flag."""
        self.root = root
        self.bound: dict[str, tuple[str, str]] = {}  # click parameter name -> (field path, flag)
        self.runs = runs

    def option(self, path: str, *decls: str, **kw):
        """``click.option(*decls)`` whose default is the configuration's for ``path``."""
        default = default_at(self.root, path)
        if "type" not in kw and not kw.get("is_flag") and not any("/" in d for d in decls):
            t = _click_type(field_type(self.root, path), path)
            if t is not None:
                kw["type"] = t
        if not kw.get("required"):
            kw["default"] = _show(default) if isinstance(default, tuple) else default
            if default is not None and default is not False:
                kw.setdefault("show_default", True)
        probe = click.Option(decls, **kw)
        flag = next(d for d in decls if d.startswith("--")).split("/")[0]
        self.bound[probe.name] = (path, flag)
        return click.option(*decls, **kw)

    def config(self, kwargs: dict, **extra):
        """The command's configuration from its keyword arguments (the bound ones are taken
        out of ``kwargs``); ``extra`` sets further fields by dotted path."""
        values = {path: kwargs.pop(name) for name, (path, _) in self.bound.items() if name in kwargs}
        return make_config(self.root, values | extra)

    def flag_for(self, field: str) -> str | None:
        return next((flag for path, flag in self.bound.values() if path == field), None)

    @contextlib.contextmanager
    def flags_named(self):
        """Errors naming a field bound here name its flag instead."""
        try:
            yield
        except FyexportError as e:
            raise rename_fields(e, self.flag_names())

    def flag_names(self) -> dict:
        """{field path: what messages call it}: this command's flags, then the command it runs."""
        own = {path: flag for path, flag in self.bound.values()}
        if self.runs is None:
            return own
        other, name, mine = self.runs
        theirs = {path: own.get(mine.get(path), f"`fyexport {name} {flag}`")
                  for path, flag in other.flag_names().items()}
        return theirs | own

    def command(self, group: click.Group, **settings):
        """``group.command`` whose function gets ``cfg`` (this command's configuration) and
        the unbound arguments, and whose configuration errors name the flags."""

        def wrap(f):
            @functools.wraps(f)
            def run(**kwargs):
                cfg = self.config(kwargs)
                G_LOGGER.field_names = self.flag_names()  # warnings name this command's flags too
                with self.flags_named():
                    return f(cfg, **kwargs)

            return group.command(**settings)(run)

        return wrap
