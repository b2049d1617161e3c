"""Arguments several commands share, and settings loaded from ``--config`` plus flags."""

from __future__ import annotations

import argparse

from ..config import Settings, load_settings


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (default: $TIERDB_CONFIG, else config/tierdb.toml if it exists)",
    )


def load_with_flags(args: argparse.Namespace, flags: dict[str, str]) -> Settings:
    """Settings from ``--config``, overridden by the flags of ``flags`` (argparse dest -> settings
    key) that were given; flags left unset do not override anything."""
    overrides = {key: getattr(args, dest) for dest, key in flags.items()}
    return load_settings(args.config, overrides=overrides)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
