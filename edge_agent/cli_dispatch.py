"""Run a parsed subcommand the same way for ``edge-agent`` and ``edge-collector``: logging from
``-v``, an :class:`~edge_agent.errors.EdgeAgentError` as one line and exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import EdgeAgentError

__all__ = ["dispatch"]


def dispatch(prog: str, args: argparse.Namespace) -> int:
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except EdgeAgentError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as Unix tools do.
        sys.stderr.close()
        return 0
