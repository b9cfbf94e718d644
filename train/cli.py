"""``winnow train ...``, ``winnow generate`` and ``winnow export`` (filled in by issue 7).

``register`` only builds parsers: torch is imported by the handlers, so ``winnow validate`` and
``winnow --help`` never pay torch's import time.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``generate`` and ``export`` to winnow's parser."""
