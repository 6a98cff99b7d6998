"""``edge-agent run`` and ``edge-agent submit`` (the long-running agent and the firmware hook)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .config import load_config
from .spool import Spool

__all__ = ["add_parsers", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = Path("/etc/edge-agent/agent.yaml")

_RUN_HELP = """\
Run the agent: images arrive through the firmware hook (Unix socket and `edge-agent submit`),
the DICOM C-STORE SCP and the hot folder; every verdict is appended to the journal.
SIGTERM or SIGINT stops it after the current image (exit 0). Exit 2: the config or the model
is unusable, or a listener cannot be opened; nothing was started.
"""

_SUBMIT_HELP = """\
Queue image files for the agent and return once each is durably spooled; prints
`OK <sha256> <file>` per file. Works without a running agent (the agent judges the queue when
it starts). Submitting the same bytes again is harmless. Exit 2 if a file could not be queued
(files before it were queued), for instance while the spool is full (spool.max_pending_bytes,
spool.min_free_bytes): the message gives the figures; keep the file and submit it again later.
"""


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("EDGE_AGENT_CONFIG", DEFAULT_CONFIG)),
        help=f"agent.yaml (default: $EDGE_AGENT_CONFIG or {DEFAULT_CONFIG})",
    )


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    run = sub.add_parser("run", help="run the long-lived agent", description=_RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arg(run)
    run.set_defaults(func=run_agent)
    submit = sub.add_parser("submit", help="queue image files for the agent (firmware hook)",
                            description=_SUBMIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arg(submit)
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.set_defaults(func=submit_files)


def run_agent(args: argparse.Namespace) -> int:
    from .agent import Agent  # the runtimes load only for `run`

    config = load_config(args.config)
    root = logging.getLogger()
    if args.verbose == 0 or config.logging.level_number < root.level:
        root.setLevel(config.logging.level_number)
    return Agent(config).run()


def submit_files(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    spool = Spool(config.spool_dir, config.spool.max_pending_bytes, config.spool.min_free_bytes)
    for f in args.files:
        item = spool.accept_file(f, source="hook")
        print(f"OK {item.sha256} {f}", flush=True)
    return 0
