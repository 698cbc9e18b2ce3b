"""The ``actsort`` command.

Thin by design: each subcommand lives in its own module ``cmd_<name>.py`` in this package, which
defines ``register(subparsers)``; the module parses, loads the config, calls one library
function and reports. Heavy libraries (torch, lightning, gradio) are imported inside ``run`` so
that ``actsort --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from .. import __version__

__all__ = ["main", "build_parser"]


def _command_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            yield importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actsort",
        description="Curate calcium-imaging cell-extraction outputs with active learning.",
    )
    parser.add_argument("--version", action="version", version=f"actsort-gpu {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def _quiet_after_error() -> None:
    """After the one-line message: zarr's event loop may still hold writes that failed with
    the same cause (a full disk); asyncio would log their tracebacks, and Python report their
    coroutines, at exit. Those repeat the reported error: keep them off the terminal."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (
            isinstance(unraisable.exc_value, RuntimeError)
            and "Event loop is closed" in str(unraisable.exc_value)
        ):
            previous(unraisable)

    sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        KeyError,
        RuntimeError,
        OSError,
    ) as exc:
        # Errors raised at the library boundary already name the file and the problem; show
        # them as one readable line instead of a traceback (use -v for the traceback).
        if args.verbose:
            raise
        print(f"actsort {args.command}: error: {exc}", file=sys.stderr)
        _quiet_after_error()
        return 1
    except MemoryError as exc:
        # inputs are size-checked before large allocations; this is the last resort
        if args.verbose:
            raise
        print(
            f"actsort {args.command}: error: out of memory ({exc or 'MemoryError'}); an input "
            f"may declare a size much larger than its data (run with -v for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
