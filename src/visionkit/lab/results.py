"""The typed results of a lab experiment: claims, computed verdicts, tables, figures.

A :class:`Claim` quotes the handbook (verbatim, in its language) with an English rendering and says what
kind of statement it is: a ``"fact"`` (arithmetic, a definition, a formula: if it does not hold, the
handbook is wrong and the verdict is an *erratum*) or an ``"empirical"`` claim (a statement about how
training behaves: if it does not hold in our small experiment, that is a finding, not an erratum).

A :class:`Verdict` is made only by :func:`judge` from a measured value and a boolean computed from it:
``holds`` is never typed in by hand. A :class:`Result` is what the runner stores (JSON) and the book shows.

Example:
    >>> claim = Claim("§33", "Recall=2/6=30%", "top-5 recall is 2/6 = 30 %", kind="fact")
    >>> verdict = judge(claim, "2/6 equals 0.30 to 3 decimals", 2 / 6, holds=round(2 / 6, 3) == 0.30,
    ...                 correction="2/6 = 33.3 %")
    >>> verdict.holds, verdict.is_erratum, verdict.measured
    (False, True, '0.3333')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Claim", "Figure", "Findings", "Result", "Table", "Verdict", "format_value", "judge"]

ClaimKind = Literal["fact", "empirical"]


@dataclass(frozen=True)
class Claim:
    """A handbook statement under test.

    Attributes:
        section: the handbook section, ``"§1"`` … ``"§37"`` or ``"frontier"``.
        quote: the handbook's words, verbatim (Chinese); tests check it occurs in the handbook.
        english: an English rendering of the quote.
        kind: ``"fact"`` (its failure is an erratum) or ``"empirical"``.
    """

    section: str
    quote: str
    english: str
    kind: ClaimKind = "empirical"

    def __post_init__(self) -> None:
        if self.kind not in ("fact", "empirical"):
            raise ValueError(f"Claim.kind must be 'fact' or 'empirical', got {self.kind!r}")
        if not self.quote.strip() or not self.english.strip():
            raise ValueError(f"Claim for {self.section} needs a quote and an English rendering")


@dataclass(frozen=True)
class Verdict:
    """A claim, the criterion it was tested by, the measured value and whether the claim holds.

    ``correction`` (for a fact that does not hold) states the right value as computed.
    """

    claim: Claim
    criterion: str
    measured: str
    holds: bool
    correction: str = ""

    @property
    def is_erratum(self) -> bool:
        """A fact that does not hold: the handbook is wrong here."""
        return self.claim.kind == "fact" and not self.holds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "is_erratum": self.is_erratum}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            Claim(**data["claim"]),
            data["criterion"],
            data["measured"],
            bool(data["holds"]),
            data.get("correction", ""),
        )


def format_value(value: Any, digits: int = 4) -> str:
    """A measured value as text: floats with ``digits`` significant digits, sequences joined.

    Example:
        >>> format_value(2 / 3), format_value([1, 0.5]), format_value("7×7")
        ('0.6667', '1, 0.5', '7×7')
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(format_value(v, digits) for v in value)
    return str(value)


def judge(claim: Claim, criterion: str, measured: Any, *, holds: Any, correction: str = "") -> Verdict:
    """Make a :class:`Verdict`; ``holds`` is the computed test (a Python or NumPy/torch boolean).

    Raises:
        TypeError: ``holds`` is not a boolean (e.g. a tensor of several values or a number).
    """
    flag = bool(holds.item()) if hasattr(holds, "item") else holds
    if not isinstance(flag, bool):
        raise TypeError(f"judge: holds must be a boolean computed from the measurement, got {holds!r}")
    text = measured if isinstance(measured, str) else format_value(measured)
    return Verdict(claim, criterion, text, flag, correction if not flag else "")


@dataclass(frozen=True)
class Table:
    """A titled table: rows of ``column -> value`` (numbers or text)."""

    title: str
    rows: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, title: str, rows: Sequence[Mapping[str, Any]]) -> Table:
        """A table whose cells are plain JSON values (one-element tensors and NumPy scalars unwrapped).

        Raises:
            TypeError: a cell is not a number, a string, a boolean or ``None``.
        """
        return cls(title, tuple({key: _plain(key, value) for key, value in row.items()} for row in rows))


def _plain(key: str, value: Any) -> Any:
    if (hasattr(value, "item") and getattr(value, "size", 1) in (1, ())) or hasattr(value, "numel"):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"table cell {key!r} must be a number or text, got {type(value).__name__}")


@dataclass(frozen=True)
class Figure:
    """A PNG written by the runner; ``path`` is relative to the book's folder."""

    name: str
    caption: str
    path: str


@dataclass
class Findings:
    """What an experiment function returns: verdicts, tables, the key numbers and notes."""

    verdicts: list[Verdict]
    tables: list[Table] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    """One experiment's run: :class:`Findings` plus figures and the run's metadata (stored as JSON)."""

    name: str
    sections: tuple[str, ...]
    title: str
    verdicts: list[Verdict]
    tables: list[Table]
    figures: list[Figure]
    numbers: dict[str, float]
    notes: list[str]
    quick: bool
    seed: int
    seconds: float
    code_version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sections": list(self.sections),
            "title": self.title,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "tables": [{"title": t.title, "rows": list(t.rows)} for t in self.tables],
            "figures": [asdict(f) for f in self.figures],
            "numbers": dict(self.numbers),
            "notes": list(self.notes),
            "quick": self.quick,
            "seed": self.seed,
            "seconds": self.seconds,
            "code_version": self.code_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        return cls(
            name=data["name"],
            sections=tuple(data["sections"]),
            title=data["title"],
            verdicts=[Verdict.from_dict(v) for v in data["verdicts"]],
            tables=[Table.of(t["title"], t["rows"]) for t in data["tables"]],
            figures=[Figure(**f) for f in data["figures"]],
            numbers=dict(data["numbers"]),
            notes=list(data["notes"]),
            quick=bool(data["quick"]),
            seed=int(data["seed"]),
            seconds=float(data["seconds"]),
            code_version=data["code_version"],
        )
