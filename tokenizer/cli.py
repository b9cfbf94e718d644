"""``winnow tokenizer encode|decode|show|report``: use and inspect a trained tokenizer.

``TOKENIZER`` is a tokenizer folder, a run directory holding ``tokenizer/``, or a checkpoint.
Only argparse is imported here; each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tokenizer`` subcommand to winnow's parser; handlers import lazily."""
    p = sub.add_parser("tokenizer", help="encode, decode, show or report with a trained tokenizer")
    cmds = p.add_subparsers(dest="tokenizer_command", required=True)

    def text_args(c: argparse.ArgumentParser) -> None:
        c.add_argument("tokenizer", help="tokenizer folder, run dir or checkpoint")
        c.add_argument("text", nargs="?", help="text (default: --file, else standard input)")
        c.add_argument("-f", "--file", help="read the text from this file")
        c.add_argument(
            "--allow-special",
            action="store_true",
            help="read <|endoftext|>, <|user|>, ... in the text as special tokens (default: plain text)",
        )

    e = cmds.add_parser("encode", help="print the token ids of a text")
    text_args(e)
    e.add_argument("--json", action="store_true", help="print a JSON list")
    e.set_defaults(handler=cmd_encode)

    d = cmds.add_parser("decode", help="print the text of token ids")
    d.add_argument("tokenizer", help="tokenizer folder, run dir or checkpoint")
    d.add_argument("ids", nargs="*", help="ids (default: standard input; spaces, commas, brackets ok)")
    d.set_defaults(handler=cmd_decode)

    s = cmds.add_parser("show", help="the text with visible token boundaries and ids (like tiktokenizer)")
    text_args(s)
    s.add_argument("--plain", action="store_true", help="no colours: tokens between | markers")
    s.set_defaults(handler=cmd_show)

    r = cmds.add_parser("report", help="compression on a text file: bytes per token, tokens per word")
    r.add_argument("tokenizer", help="tokenizer folder, run dir or checkpoint")
    r.add_argument("file", help=".txt (whole file), .jsonl[.gz] (field 'text') or .parquet (column 'text')")
    r.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="OTHER",
        help="another tokenizer: folder or tokenizer.json",
    )
    r.add_argument("--field", default="text", help="JSON field / Parquet column with the text")
    r.add_argument("--json", action="store_true", help="print the numbers as JSON")
    r.set_defaults(handler=cmd_report)


def _read_text(args: argparse.Namespace) -> str:
    if args.text is not None and args.file:
        raise SystemExit("winnow tokenizer: give the text or --file, not both")
    if args.text is not None:
        return args.text
    if args.file:
        with open(args.file, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    return sys.stdin.read()


def _load(path: str):
    from tokenizer.encoding import Tokenizer

    try:
        return Tokenizer.from_dir(path)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"winnow tokenizer: {exc}") from None


def _encode(tok, text: str, allow_special: bool) -> list[int]:
    return tok.encode(text, allowed_special="all" if allow_special else frozenset())


def cmd_encode(args: argparse.Namespace) -> int:
    import json

    tok = _load(args.tokenizer)
    ids = _encode(tok, _read_text(args), args.allow_special)
    print(json.dumps(ids) if args.json else " ".join(map(str, ids)))
    return 0


def parse_ids(words: list[str], vocab_size: int) -> list[int]:
    import re

    ids = [int(x) for x in re.findall(r"-?\d+", " ".join(words))]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise SystemExit(f"winnow tokenizer: id(s) {bad[:5]} outside 0..{vocab_size - 1}")
    return ids


def cmd_decode(args: argparse.Namespace) -> int:
    tok = _load(args.tokenizer)
    ids = parse_ids(args.ids or [sys.stdin.read()], tok.vocab_size)
    sys.stdout.write(tok.decode(ids))
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    return 0


def token_label(raw: bytes) -> str:
    """A token's text for display: control characters escaped, an incomplete UTF-8 piece as hex."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<{b:02X}>" for b in raw)
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def cmd_show(args: argparse.Namespace) -> int:
    tok = _load(args.tokenizer)
    text = _read_text(args)
    ids = _encode(tok, text, args.allow_special)
    labels = [token_label(tok.token_bytes(i)) for i in ids]
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    summary = f"{len(ids)} tokens, {len(text)} characters, {n_bytes} bytes"
    if len(ids):
        summary += f", {n_bytes / len(ids):.2f} bytes/token"
    if args.plain or not sys.stdout.isatty():
        print("|" + "|".join(labels) + "|")
        print(" ".join(map(str, ids)))
        print(summary)
        return 0
    from rich.console import Console
    from rich.text import Text

    colours = ["on #3b4261", "on #4a3f2b", "on #2f4a3a", "on #4a2f45", "on #2b4450"]
    shown = Text()
    for k, label in enumerate(labels):
        shown.append(label, style=colours[k % len(colours)])
    console = Console(highlight=False)
    console.print(shown)
    console.print(Text(" ".join(map(str, ids)), style="dim"))
    console.print(summary)
    return 0


def read_report_texts(path: str, field: str = "text") -> list[str]:
    import gzip
    import json

    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return [t for t in pq.read_table(path, columns=[field]).column(field).to_pylist() if t]
    if path.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        opener = gzip.open if path.endswith(".gz") else open
        texts = []
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        value = json.loads(line).get(field)
                    except (json.JSONDecodeError, AttributeError) as exc:
                        raise SystemExit(f"winnow tokenizer: {path}:{n}: not a JSON object ({exc})") from None
                    if isinstance(value, str) and value:
                        texts.append(value)
        return texts
    with open(path, encoding="utf-8", errors="replace") as f:
        return [f.read()]


def load_any(path: str):
    """(label, encode_batch) for a winnow tokenizer folder or a Hugging Face tokenizer.json."""
    from pathlib import Path

    p = Path(path)
    if p.is_file() and p.suffix == ".json" and p.name != "winnow_tokenizer.json":
        import tokenizers

        hf = tokenizers.Tokenizer.from_file(str(p))
        hf.encode_special_tokens = True  # plain text, like ours

        def hf_batch(texts: list[str]) -> list[int]:
            return [len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False)]

        return f"{p} (HF, vocab {hf.get_vocab_size()})", hf_batch
    tok = _load(path)

    def ours(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tok.encode_batch(texts)]

    return f"{tok.path} (vocab {tok.vocab_size})", ours


def compression_report(texts: list[str], tokenizers: list[str]) -> dict:
    """Bytes, characters, words and tokens of ``texts`` under each tokenizer."""
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n_chars = sum(len(t) for t in texts)
    n_words = sum(len(t.split()) for t in texts)
    rows = []
    for path in tokenizers:
        label, count = load_any(path)
        tokens = sum(count(texts))
        rows.append(
            {
                "tokenizer": label,
                "tokens": tokens,
                "bytes_per_token": round(n_bytes / tokens, 4) if tokens else None,
                "chars_per_token": round(n_chars / tokens, 4) if tokens else None,
                "tokens_per_word": round(tokens / n_words, 4) if n_words else None,
            }
        )
    for row in rows[1:]:
        row["tokens_vs_first"] = round(row["tokens"] / rows[0]["tokens"], 4) if rows[0]["tokens"] else None
    return {"documents": len(texts), "bytes": n_bytes, "chars": n_chars, "words": n_words, "tokenizers": rows}


def cmd_report(args: argparse.Namespace) -> int:
    import json

    try:
        texts = read_report_texts(args.file, args.field)
    except OSError as exc:
        raise SystemExit(f"winnow tokenizer: {exc}") from None
    report = compression_report(texts, [args.tokenizer, *args.compare])
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{args.file}: {report['documents']} document(s), {report['bytes']:,} bytes, "
        f"{report['chars']:,} characters, {report['words']:,} words"
    )
    heads = ("tokens", "bytes/token", "chars/token", "tokens/word")
    print(" ".join(f"{h:>12}" for h in heads) + f" {'vs first':>9}  tokenizer")
    for row in report["tokenizers"]:
        vs = f"{row['tokens_vs_first']:.3f}x" if "tokens_vs_first" in row else "-"
        print(
            f"{row['tokens']:>12,} {row['bytes_per_token'] or 0:>12.3f} {row['chars_per_token'] or 0:>12.3f} "
            f"{row['tokens_per_word'] or 0:>12.3f} {vs:>9}  {row['tokenizer']}"
        )
    return 0
