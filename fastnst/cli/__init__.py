"""The ``fastnst`` command line: parse arguments into config dataclasses and call the library.

This package is the only place that prints or exits: one module per command
(``info`` also holds ``convert``, ``optimize`` also ``score``), the option
helpers they share in ``options``. Exit codes: 0 success, 1 a run finished but
some inputs failed (each named on stderr) or the run could not be done, 2 a
usage error (bad option or value), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fastnst import __version__
from fastnst.cli import export, info, optimize, stylize, train
from fastnst.errors import ConfigError, FastNSTError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnst", description="Fast neural style transfer.")
    parser.add_argument("--version", action="version", version=f"fastnst {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (info.add_info, info.add_convert, stylize.add_stylize, optimize.add_optimize, optimize.add_score,
                export.add_export, train.add_train):
        add(sub)
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("fastnst")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastnst`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code or 0)
    _setup_logging(args.verbose, args.quiet)
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"fastnst {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FastNSTError as exc:
        print(f"fastnst {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastnst {args.command}: interrupted", file=sys.stderr)
        return 130
