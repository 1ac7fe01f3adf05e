"""Handle/target point pairs: parsing ``"x,y->x,y;x,y->x,y"`` strings and validation.

Points are in the generator's image pixel coordinates: ``x`` is the column and
``y`` the row, both counted from the top-left pixel, which is ``(0, 0)``; the
bottom-right pixel of an ``R x R`` image is ``(R-1, R-1)``. Fractional values are
allowed (a point between pixel centres).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

Point = tuple[float, float]

PAIR_SEPARATOR = ";"
ARROW = "->"
EXAMPLE = '"120,80->140,80;60,60->60,50"'

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_POINT_RE = re.compile(rf"^\s*({_NUMBER})\s*,\s*({_NUMBER})\s*$")


class PointError(ValueError):
    """A handle/target specification that cannot be used (bad syntax, outside the image, ...)."""


def parse_point(text: str, what: str = "point") -> Point:
    """``"12,34"`` -> ``(12.0, 34.0)``; ``what`` names the point in the error message."""
    match = _POINT_RE.match(text)
    if not match:
        raise PointError(f"{what}: expected two numbers 'x,y' (for example '120,80'), got {text.strip()!r}")
    return float(match.group(1)), float(match.group(2))


def parse_points(spec: str) -> tuple[list[Point], list[Point]]:
    """Parse ``"x,y->x,y;x,y->x,y"`` into (handles, targets).

    Each ``;``-separated pair is ``handle->target``. Whitespace is ignored and a
    trailing ``;`` is allowed. Raises :class:`PointError` naming the bad pair.
    """
    if spec is None or not spec.strip():
        raise PointError(f"no points given: expected 'x,y->x,y' pairs separated by ';', e.g. {EXAMPLE}")
    pairs = [p for p in spec.split(PAIR_SEPARATOR)]
    if pairs and not pairs[-1].strip():  # allow one trailing separator
        pairs = pairs[:-1]
    handles, targets = [], []
    for i, pair in enumerate(pairs, start=1):
        label = f"pair {i} ({pair.strip()!r})"
        if not pair.strip():
            raise PointError(f"pair {i} is empty: remove the extra ';' (expected 'x,y->x,y', e.g. {EXAMPLE})")
        if pair.count(ARROW) != 1:
            raise PointError(f"{label}: expected exactly one '->' between the handle and the target, "
                             f"like '120,80->140,80'")
        handle_text, target_text = pair.split(ARROW)
        handles.append(parse_point(handle_text, f"{label}, handle"))
        targets.append(parse_point(target_text, f"{label}, target"))
    return handles, targets


def format_points(handles: Iterable[Sequence[float]], targets: Iterable[Sequence[float]]) -> str:
    """Inverse of :func:`parse_points` (integers are written without a decimal point)."""
    def fmt(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"
    return ";".join(f"{fmt(h[0])},{fmt(h[1])}->{fmt(t[0])},{fmt(t[1])}" for h, t in zip(handles, targets))


def validate_points(handles, targets, resolution: int) -> tuple[list[Point], list[Point]]:
    """Check a handle/target list for an ``resolution x resolution`` image; return them as float tuples.

    Rules: at least one pair, as many targets as handles, every coordinate a
    finite number in ``[0, resolution - 1]``.
    """
    handles = _as_point_list(handles, "handle")
    targets = _as_point_list(targets, "target")
    if not handles:
        raise PointError("no handle points given: place at least one handle and its target")
    if len(handles) != len(targets):
        raise PointError(f"got {len(handles)} handle(s) but {len(targets)} target(s): "
                         f"every handle needs exactly one target")
    limit = resolution - 1
    for kind, points in (("handle", handles), ("target", targets)):
        for i, (x, y) in enumerate(points, start=1):
            if not (math.isfinite(x) and math.isfinite(y)):
                raise PointError(f"{kind} {i} ({x}, {y}) is not a finite number")
            if not (0 <= x <= limit and 0 <= y <= limit):
                raise PointError(f"{kind} {i} ({x:g}, {y:g}) is outside the {resolution}x{resolution} image: "
                                 f"x and y must be within 0..{limit}")
    return handles, targets


def _as_point_list(points, kind: str) -> list[Point]:
    if points is None:
        return []
    out = []
    for i, p in enumerate(points, start=1):
        try:
            x, y = (float(v) for v in p)
        except (TypeError, ValueError):
            raise PointError(f"{kind} {i} must be a pair of numbers (x, y), got {p!r}") from None
        out.append((x, y))
    return out
