"""What every stage's configuration shares: the error that names a field, and reading a
field's default and building a (nested) configuration from dotted field paths.

Each stage has one typed configuration (a dataclass) holding its defaults, written once;
the build's configuration nests them.  Library code names fields, never command-line
flags, and writes a field name in backquotes: a :class:`ConfigError` says
```recover.batch` must be >= 1``, a hint says ``recover longer (`recover.minutes`)``.
The CLI, which knows which flag of the command the user ran sets each field, rewrites
them (``--recover-batch must be >= 1``, ``recover longer (--recover-minutes)``).
"""
from __future__ import annotations

import dataclasses
import typing

from .errors import InputError, name_fields


class ConfigError(InputError):
    """A configuration value the user can fix, naming the field (dotted for nested ones)."""

    def __init__(self, field: str, problem: str, hint: str | None = None):
        self.field, self.problem = field, problem
        super().__init__(f"{ref(field)} {problem}", hint)

    def within(self, prefix: str) -> "ConfigError":
        """The same error named from the configuration that nests this one."""
        return ConfigError(f"{prefix}.{self.field}", self.problem, self.hint)


def ref(field: str) -> str:
    """How a message names a field (the CLI puts the flag in its place)."""
    return f"`{field}`"


def rename_fields(error, names: dict):
    """``error`` (a FyexportError) with the fields in its text named by ``names``
    ({field: what to call it}); fields not in ``names`` keep their field name."""
    error.message, error.hint = name_fields(error.message, names), name_fields(error.hint, names)
    error.args = (str(error),)
    return error


def require(ok: bool, field: str, problem: str, hint: str | None = None) -> None:
    """Raise a :class:`ConfigError` for ``field`` unless ``ok``."""
    if not ok:
        raise ConfigError(field, problem, hint)


def validate_nested(cfg, names: typing.Iterable[str]) -> None:
    """Validate the nested configurations ``names`` of ``cfg``, naming fields from ``cfg``."""
    for name in names:
        try:
            getattr(cfg, name).validate()
        except ConfigError as e:
            raise e.within(name)


def _field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None  # a required field: no default


def _nested_type(cls: type, name: str) -> type | None:
    """The configuration class of a nested field (``X | None`` counts as ``X``)."""
    hint = typing.get_type_hints(cls)[name]
    for t in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(t):
            return t
    return None


def default_at(cls: type, path: str):
    """The default of the field at dotted ``path`` of configuration class ``cls`` (a nested
    configuration's default is the one its parent gives it, e.g. the build's method)."""
    head, _, rest = path.partition(".")
    f = _field(cls, head)
    value = _field_default(f)
    if not rest:
        return value
    if value is None:
        return default_at(_nested_type(cls, head), rest)
    for part in rest.split("."):
        value = getattr(value, part)
    return value


def field_type(cls: type, path: str):
    """The annotation of the field at dotted ``path``."""
    head, _, rest = path.partition(".")
    if rest:
        return field_type(_nested_type(cls, head), rest)
    return typing.get_type_hints(cls)[head]


def make_config(cls: type, values: dict, base=None):
    """An instance of ``cls`` from {dotted field path: value}: ``base`` (or the defaults)
    with those fields set; a nested configuration keeps the default its parent gives it
    except for the fields named."""
    own, nested = {}, {}
    for path, v in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = v
        else:
            own[head] = v
    for head, sub in nested.items():
        current = getattr(base, head) if base is not None else _field_default(_field(cls, head))
        own[head] = make_config(_nested_type(cls, head), sub, current)
    return dataclasses.replace(base, **own) if base is not None else cls(**own)
