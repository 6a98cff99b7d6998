"""``edge-agent``: the device-side command.

Subcommands register themselves from small modules (``scan_cmd``, ``agent_cli``), each with an
``add_parser(subparsers)`` that sets ``func`` to a handler returning the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, agent_cli, demo, scan_cmd
from . import trust_cli
from . import dicom_signature_cli
from .errors import EdgeAgentError

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
    trust_cli.add_parsers(sub)
    dicom_signature_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except EdgeAgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
