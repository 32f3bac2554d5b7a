"""One row of the TrainConfig table: a field's default, help, flag type and accepted range.

``option(...)`` declares a field with its row (``dataclasses.field`` metadata); the ``spikestab train``
flags (``flags.py``), the sweep's option space (``sweep/space.py``) and ``TrainConfig.validate`` all read
these rows, so a field's name, type, default, help and range are written once.

>>> POSITIVE.problem("lr", -1.0)
'lr must be a finite number > 0, got -1.0'
>>> POSITIVE.problem("lr", 0.5) is None
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """Values ``accepts`` takes are fine; any other is ``"{name} must be {text}, got {value!r}{note}"``."""

    accepts: Callable[[Any], bool]
    text: str
    note: str = ""


@dataclass(frozen=True)
class Range:
    """A field's accepted values: checks in order (the first that fails names the problem); ``text`` is
    what the flag's help quotes."""

    checks: tuple[Check, ...] = ()

    @property
    def text(self) -> str:
        return self.checks[-1].text if self.checks else ""

    def problem(self, name: str, value: Any) -> str | None:
        """The message for a value outside the range, None for a good one."""
        for check in self.checks:
            if not check.accepts(value):
                return f"{name} must be {check.text}, got {value!r}{check.note}"
        return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def one_of(values: Collection[str], key: Callable[[str], str] = str, sort: bool = False) -> Range:
    """A name from ``values`` (after ``key``, e.g. an alias resolved to its canonical name), listed in
    their own order or ``sort``-ed."""
    listed = sorted(values) if sort else list(values)
    return Range((Check(lambda v: isinstance(v, str) and key(v) in values, f"one of {listed}"),))


def integer(low: int, note: str = "", optional: str = "") -> Range:
    """An integer >= ``low``; ``optional``: None is accepted too, and the text says what None means."""
    text = f"an integer >= {low}{note}"
    if optional:
        return Range((Check(lambda v: v is None or (_integer(v) and v >= low), f"None ({optional}) or {text}"),))
    return Range((Check(lambda v: _integer(v) and v >= low, text),))


def fraction(open_low: bool = False, optional: bool = False) -> Range:
    """A number in [0, 1) (``open_low``: in (0, 1)); ``optional``: or None."""
    text = "in (0, 1)" if open_low else "in [0, 1)"

    def accepts(v: Any) -> bool:
        return (optional and v is None) or (_number(v) and (v > 0 if open_low else v >= 0) and v < 1)

    return Range((Check(accepts, text),))


POSITIVE = Range((Check(lambda v: _number(v) and v > 0, "a finite number > 0"),))
ANY = Range()


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    range: Range = ANY,
    flag: type | None = str,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A TrainConfig field with its row: ``flag`` is the type its ``--flag`` parses (``bool``: a switch,
    None: no value flag), ``range`` what ``validate`` accepts, ``help`` the flag's help."""
    meta = {"help": help, "range": range, "flag": flag}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def rows(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a dataclass declared with ``option``, by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls) if "range" in f.metadata}
