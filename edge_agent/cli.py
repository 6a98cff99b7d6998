"""``edge-agent``: the device-side command.

Subcommands register themselves from small modules (``scan_cmd``, ``agent_cli``), each with an
``add_parser(subparsers)`` that sets ``func`` to a handler returning the exit status.
"""

from __future__ import annotations

import argparse

from . import __version__, agent_cli, demo, learn_cmd, scan_cmd
from . import trust_cli
from . import dicom_signature_cli
from .cli_dispatch import dispatch

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="Authenticity checks for medical images at the point of capture."
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    scan_cmd.add_parser(sub)
    demo.add_parser(sub)
    agent_cli.add_parsers(sub)
    learn_cmd.add_parser(sub)
    trust_cli.add_parsers(sub)
    dicom_signature_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch("edge-agent", build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
