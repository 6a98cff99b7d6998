"""``edge-collector``: the central side (MQTT subscriber, verifier, store, alerts).

The transport issue fills this in; until then the command says so instead of pretending.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    print(
        "edge-collector: the central collector is not built yet (transport issue); "
        "verdicts are recorded by the agent's local journal for now",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
