"""``edge-agent run`` and ``edge-agent submit`` (the long-running agent and the firmware hook)."""

from __future__ import annotations

import argparse

__all__ = ["add_parsers"]


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    return None
