"""``winnow tokenizer encode|decode|show|report`` (filled in by issue 6)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tokenizer`` subcommand to winnow's parser; handlers import lazily."""
