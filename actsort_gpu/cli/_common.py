"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse
import os

from ..backend import DEVICES


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=os.environ.get("ACTSORT_DEVICE", "auto"),
        help="compute device (default: $ACTSORT_DEVICE or auto: GPU if usable, else CPU)",
    )


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="YAML", default=None, help="YAML file overriding configs/defaults.yaml"
    )


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )
