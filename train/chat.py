"""``winnow chat``: an interactive conversation with a checkpoint in the terminal.

Each line read from stdin is a user message; the reply streams to stdout as it is generated
(``train.generate.generate`` on the ids of ``tokenizer.chat.render_for_completion``, so the format is
the one SFT trains on).  The whole conversation is sent every turn: the model has no memory beyond
its context.  When the rendered history plus ``--max-new-tokens`` no longer fits the model's context
(``block_size``), the oldest user/assistant turns are dropped -- never the ``--system`` message --
and a note says so the first time.  ``/reset`` starts over (keeping the system message), ``/quit`` or
end of input leaves.  ``--transcript FILE.jsonl`` appends one JSON line per turn: the messages sent,
their prompt ids and the reply (text, ids, finish reason), for inspection or tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tokenizer.chat import render_for_completion, require_chat_tokens

PROMPT = "> "
HELP = "commands: /reset (start over), /quit (leave); end of input also leaves"


def fit_history(tokenizer, messages: Sequence[dict], budget: int) -> tuple[list[dict], int]:
    """The most recent part of ``messages`` whose completion prompt has at most ``budget`` tokens,
    and how many messages were dropped.

    A leading system message is always kept; older messages go first, a user message together with
    the assistant reply that follows it, so the kept history still starts with a user turn.  If even
    the system message and the last user message do not fit, ``ValueError``.
    """
    system = list(messages[:1]) if messages and messages[0]["role"] == "system" else []
    rest = list(messages[len(system) :])
    dropped = 0
    while True:
        n = len(render_for_completion(tokenizer, system + rest))
        if n <= budget:
            return system + rest, dropped
        if len(rest) <= 1:
            raise ValueError(
                f"the message needs {n} tokens with the system message, but the context has room for "
                f"{budget} (block size minus --max-new-tokens); send a shorter one"
            )
        k = 2 if rest[0]["role"] == "user" and rest[1]["role"] == "assistant" else 1
        rest, dropped = rest[k:], dropped + k


def main(args: argparse.Namespace) -> int:
    import torch

    from train.generate import config_from_args, generate, load_for_generation, resolve_device

    try:
        cfg = config_from_args(args)
        device = resolve_device(args.device)
    except (ValueError, OSError) as e:
        print(f"winnow chat: {e}", file=sys.stderr)
        return 2
    model, tokenizer = load_for_generation(args, device)
    block = model.config.block_size
    budget = block - cfg.max_new_tokens
    try:
        require_chat_tokens(tokenizer)
        if budget < 2:
            raise ValueError(
                f"--max-new-tokens {cfg.max_new_tokens} leaves no room for the conversation in the "
                f"model's context of {block} tokens"
            )
    except ValueError as e:
        print(f"winnow chat: {e}", file=sys.stderr)
        return 2
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    transcript = open(args.transcript, "a", encoding="utf-8") if args.transcript else None  # noqa: SIM115
    out, err = sys.stdout, sys.stderr
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    print(f"winnow chat: {args.checkpoint} (context {block} tokens). {HELP}", file=err)
    warned = False

    def on_text(row: int, delta: str) -> None:
        out.write(delta)
        out.flush()

    try:
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                out.write("\n")
                break
            command = line.strip()
            if command == "/quit":
                break
            if command == "/reset":
                history = list(system)
                print("(conversation reset)", file=err)
                continue
            if command.startswith("/"):
                print(f"unknown command {command}; {HELP}", file=err)
                continue
            if not command:
                continue
            try:
                messages, dropped = fit_history(
                    tokenizer, [*history, {"role": "user", "content": line}], budget
                )
            except ValueError as e:
                print(f"winnow chat: {e}", file=err)
                continue
            if dropped and not warned:
                print(
                    f"(the conversation no longer fits the model's context of {block} tokens: "
                    "the oldest turns are dropped from now on)",
                    file=err,
                )
                warned = True
            ids = render_for_completion(tokenizer, messages)
            (reply,) = generate(model, tokenizer, [line], cfg, on_text=on_text, prompt_ids=[ids])
            out.write("\n")
            out.flush()
            history = [*messages, {"role": "assistant", "content": reply.text}]
            if transcript is not None:
                row = {
                    "messages": messages,
                    "prompt_ids": ids,
                    "dropped": dropped,
                    "reply": {k: getattr(reply, k) for k in ("text", "token_ids", "finish_reason")},
                }
                transcript.write(json.dumps(row, ensure_ascii=False) + "\n")
                transcript.flush()
    except KeyboardInterrupt:
        out.write("\n")
    finally:
        if transcript is not None:
            transcript.close()
    return 0
