"""The ``fastnst`` command line: parse arguments into config dataclasses and call the library.

This package is the only place that prints or exits: one module per command,
the option helpers they share in ``options``. Each command's options are built
only when that command runs (``fastnst --help`` lists the commands without
them), so a command never imports what another needs: ``fastnst --version``
and ``fastnst stylize`` with OpenVINO start without PyTorch.

Exit codes: 0 success (also when a reader such as ``head`` closed the output
early); 1 a run finished but some inputs failed (each named on stderr) or the
run could not be done; 2 a usage error (bad option or value); 3 an internal
error (a bug: one line, and the traceback with ``-v``); 130 interrupted. Output
never fails on a file name: names that are not valid UTF-8 are printed escaped.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from fastnst.cli import convert, export, info, optimize, score, serve, stylize, train, video
from fastnst.errors import ConfigError, FastNSTError, first_line
from fastnst.files import show_path
from fastnst.version import __version__

COMMANDS = {"train": train.add_train, "stylize": stylize.add_stylize, "export": export.add_export,
            "optimize": optimize.add_optimize, "score": score.add_score, "info": info.add_info,
            "convert": convert.add_convert, "serve": serve.add_serve,
            "video": video.add_video}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser; only the command ``argv`` names gets its options."""
    parser = argparse.ArgumentParser(prog="fastnst", description="Fast neural style transfer.")
    parser.add_argument("--version", action="version", version=f"fastnst {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only log errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = next((arg for arg in argv or () if not arg.startswith("-")), None)
    for name, add in COMMANDS.items():
        add(sub, options=name == named)
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
    argv = sys.argv[1:] if argv is None else list(argv)
    _tolerant_streams()
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code or 0)
    _setup_logging(args.verbose, args.quiet)
    args.notices = []  # deprecation lines, printed once the command has run
    try:
        code = args.run(args)
        for notice in args.notices:
            print(notice, file=sys.stderr)
        return code
    except ConfigError as exc:
        return _error(args, exc, 2)
    except FastNSTError as exc:
        return _error(args, exc, 1)
    except KeyboardInterrupt:
        print(f"fastnst {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastnst info m | head -1`: the reader has all it wanted
        _silence_stdout()
        return 0
    except Exception as exc:  # noqa: BLE001 - the last resort: one line instead of a traceback
        logging.getLogger("fastnst").debug("internal error", exc_info=True)
        hint = "" if args.verbose else "; run with -v for the traceback"
        return _error(args, f"internal error: {type(exc).__name__}: {first_line(exc)}{hint} (please report it)", 3)


def _error(args: argparse.Namespace, error, code: int) -> int:
    print(f"fastnst {args.command}: error: {show_path(error)}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _tolerant_streams() -> None:
    """Print any text, file names that are not UTF-8 included, escaped rather than raising."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
