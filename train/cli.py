"""``winnow train ...``, ``winnow generate`` and ``winnow export``.

``register`` only builds parsers: torch is imported by the handlers, so ``winnow validate`` and
``winnow --help`` never pay torch's import time.  Each command's flags live in its own function
below; its handler is ``main(args) -> int`` in the module that does the work.
"""

from __future__ import annotations

import argparse


def _lazy(module: str):
    """A handler that imports ``module`` (and so torch) only when the command runs."""

    def handler(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).main(args)

    return handler


def _pretrain_parser(train_sub: argparse._SubParsersAction) -> None:
    p = train_sub.add_parser("pretrain", help="pretrain a GPT on the token shards of run directories")
    p.set_defaults(handler=_lazy("train.pretrain"))


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint")
    p.set_defaults(handler=_lazy("train.generate"))


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint (hf: Hugging Face Llama format)")
    p.set_defaults(handler=_lazy("train.export"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``generate`` and ``export`` to winnow's parser."""
    train = sub.add_parser("train", help="train a GPT on a run's token shards")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    _pretrain_parser(train_sub)
    _generate_parser(sub)
    _export_parser(sub)
