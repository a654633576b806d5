"""How one setting is declared: its flag, environment variable, refsr.toml key, help, check and what it changes.

A setting is a field of `flows.settings.Settings` declared with :func:`option`; the field's metadata
holds an :class:`Option`. The command line (flows/cli/parser.py), the environment reader, the
refsr.toml reader, validation, the run fingerprint (flows/shortcut.py) and the resource key
(flows/resources.py) are read from these declarations, so a new setting is one field plus the code
where it acts; tests/flows/test_options.py holds each declaration to the keys it says it changes,
the job key's pixel parameters (`Settings.enhance_params`) among them.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

Check = Callable[[str, Any], Any]  # (what to call it in an error, value) -> the value in its own type, or ValueError


class Affects(enum.Flag):
    """What a different value of a setting changes; none of these = speed (or output on screen) only."""

    JOB_KEY = enum.auto()  # the pixels of an output: part of every job key (pipeline.params.EnhanceParams)
    RUN = enum.auto()  # what an enhance run does: part of its no-op fingerprint (flows/shortcut.py)
    INDEX = enum.auto()  # what an index run does: part of its no-op fingerprint
    RESOURCES = enum.auto()  # what a process must hold for it (flows/resources.py): another model, database...


SPEED_ONLY = Affects(0)


class Group(enum.StrEnum):
    """Where a flag is shown in the help; each command takes the groups that make sense for it."""

    WORKSPACE = "workspace"
    SCAN = "album roles"
    MODEL = "model"
    RETRIEVAL = "retrieval"  # album commands only; shown under "model"
    OUTPUT = "output"  # the album's output folder
    RUN = "run"  # how an enhance run goes about its photos
    INDEXING = "indexing"
    REPORT = "report"
    PROVENANCE = "provenance in the file"
    ENGINE = "task engine"  # one of its flags at most


@dataclass(frozen=True)
class Option:
    """Everything about one setting besides its name, type and default (those are the field's)."""

    help: str
    affects: Affects
    check: Check
    flags: tuple[str, ...] = ()
    group: Group | None = None
    parse: Callable[[str], Any] = str  # a flag's or variable's text -> value; ArgumentTypeError when bad
    env_parse: Callable[[str], Any] | None = None  # the variable's, where it differs from the flag's
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    action: str | None = None  # "store_true" / "store_false": a flag without a value
    env: str | None = None
    env_help: str | None = None  # its line under "environment:" in every command's help
    toml: str | None = None  # "table.key" in the album's refsr.toml
    # A default that depends on the environment or on settings declared before it.
    default_from: Callable[[Mapping[str, str], Mapping[str, Any]], Any] | None = None


@dataclass(frozen=True)
class Declared:
    name: str
    option: Option
    default: Any  # dataclasses.MISSING when the setting has no plain default


def option(default: Any = MISSING, **details: Any) -> Any:
    """A dataclass field that carries its :class:`Option`."""
    meta = {"option": Option(**details)}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def declared(cls: type) -> tuple[Declared, ...]:
    """The settings of a dataclass declared with :func:`option`, in declaration order."""
    return tuple(Declared(f.name, f.metadata["option"], f.default) for f in fields(cls) if "option" in f.metadata)


def names(cls: type, affects: Affects) -> frozenset[str]:
    """The settings whose value changes what `affects` names."""
    return frozenset(d.name for d in declared(cls) if d.option.affects & affects)


def validated(instance: object) -> None:
    """Check every declared setting of a frozen dataclass and store the value in its own type."""
    for d in declared(type(instance)):
        object.__setattr__(instance, d.name, d.option.check(f"{type(instance).__name__}.{d.name}",
                                                            getattr(instance, d.name)))


def values_from(cls: type, given: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Each setting's value: given (None = not given) > its environment variable > its default.

    A variable is not read where another flag of the same one-at-most group was given: the flag
    chose the other way (``--processes`` over ``$REFSR_DASK``).
    """
    table = declared(cls)
    known = {d.name for d in table}
    unknown = set(given) - known
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
    flagged = {d.option.group for d in table if given.get(d.name)}  # a flag set (False is "not that way")
    values: dict[str, Any] = {}
    for d in table:
        value = given.get(d.name)
        text = env.get(d.option.env, "").strip() if d.option.env else ""
        if value is None and text and not (d.option.group is Group.ENGINE and Group.ENGINE in flagged):
            try:
                value = (d.option.env_parse or d.option.parse)(text)
                d.option.check(f"Settings.{d.name}", value)  # here, so a bad value is blamed on its variable
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                raise ValueError(f"${d.option.env}={text!r}: {exc}") from None
        if value is None and d.option.default_from is not None:
            value = d.option.default_from(env, values)
        if value is not None:
            values[d.name] = value
    return values


def toml_keys(cls: type, table: str) -> dict[str, Declared]:
    """The refsr.toml keys of one [table], by key."""
    found = {}
    for d in declared(cls):
        if d.option.toml is not None and d.option.toml.split(".")[0] == table:
            found[d.option.toml.split(".", 1)[1]] = d
    return found


# -- checks (a value given in Python or read from text) ---------------------------------------


def as_is(what: str, value: Any) -> Any:
    return value


def whole(minimum: int = 1) -> Check:
    """An int >= minimum (not a bool)."""
    def check(what: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{what} must be a whole number >= {minimum}, got {value!r}")
        return value
    return check


def optional(check: Check) -> Check:
    """None, or what `check` accepts."""
    return lambda what, value: None if value is None else check(what, value)


def one_of(kind: Callable[[Any], Any]) -> Check:
    """A value turned into `kind` (an enum, Path...); its ValueError names the bad value."""
    return lambda what, value: kind(value)


# -- text parsers (flags and environment variables) --------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def number_in(low: float, high: float) -> Callable[[str], float]:
    """A number in the half-open range (low, high]."""
    def parse(text: str) -> float:
        value = number(text)
        if not low < value <= high:
            raise argparse.ArgumentTypeError(f"expected a number in ({low:g}, {high:g}], got {text!r}")
        return value
    return parse


