"""Readable tables (and JSON) for ``edge-collector verdicts | devices | alerts | rejections`` (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ..transport.health import iso_utc

__all__ = ["parse_since", "table", "as_json"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``7d`` -> seconds; raises ValueError."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise ValueError(f"--since {text!r}: expected a number and a unit s, m, h or d (e.g. 1h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("received_at", "at", "last_seen", "status_at", "last_verdict_at", "cert_not_after") and isinstance(value, (int, float)):
        return iso_utc(value) if value else "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        q = value.get("queue") or {}
        return f"queue={q.get('depth')} alarm={q.get('alarm') or '-'}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})"


def as_json(rows: Sequence[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r, sort_keys=True, default=str) for r in rows)
