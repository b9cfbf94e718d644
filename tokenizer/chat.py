"""The chat format, in one place: rendering conversations to token ids and a loss mask.

A conversation is a list of ``{"role": ..., "content": ...}`` messages; roles are ``system`` (only
as the first message), ``user`` and ``assistant``, in any number of turns.  It renders as::

    <|endoftext|> <|system|> content <|end|> <|user|> content <|end|> <|assistant|> content <|end|> ...

``<|endoftext|>`` first, because it preceded every document in pretraining (it is the BOS; for a
tokenizer imported from Hugging Face, ``start_id`` picks what preceded the source's documents: its
bos token, else its eos).  The loss mask is 1 exactly on each assistant message's content tokens
and its ``<|end|>`` -- the model must learn to close its turn, or generation never stops (the
EOS-never-trained pitfall) -- and 0 on the BOS, every role token (``<|assistant|>`` included: the
renderer writes it, the model never has to predict it) and on system/user turns.

Message content is untrusted text: special-token strings inside it (``"<|end|>"``) are encoded as
plain text, never as control tokens, so a user cannot close a turn or forge an assistant turn.

SFT (``train/sft.py``), ``winnow generate --chat``, ``winnow chat`` and the exported Hugging Face
chat template (``train/export.py``) all use this module, so the format cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Sequence

ROLES: tuple[str, ...] = ("system", "user", "assistant")
END = "<|end|>"
# The special tokens the format needs by name; a tokenizer without them cannot render chats.  (The
# leading token is a role of every tokenizer, ``start_id``: <|endoftext|> for winnow's.)
CHAT_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>", END)


class ChatFormatError(ValueError):
    """A tokenizer without the chat tokens, or a malformed conversation."""


def role_token(role: str) -> str:
    """``"user"`` -> ``"<|user|>"``."""
    return f"<|{role}|>"


def require_chat_tokens(tokenizer) -> dict[str, int]:
    """The ids of ``CHAT_TOKENS`` (name -> id); ``ChatFormatError`` naming every missing one.  SFT
    calls it before training, so a tokenizer that cannot render chats fails at once."""
    specials = tokenizer.special_tokens
    missing = [t for t in CHAT_TOKENS if t not in specials]
    if missing:
        raise ChatFormatError(
            f"tokenizer {getattr(tokenizer, 'path', '')} lacks the chat special tokens {', '.join(missing)} "
            f"(the chat format needs {', '.join(CHAT_TOKENS)}; winnow's tokenizer trainer always adds them, "
            "train.import_hf.add_chat_tokens adds them to an imported one)"
        )
    return {t: specials[t] for t in CHAT_TOKENS}


def start_id(tokenizer) -> int:
    """The token a conversation starts with: what preceded every document in pretraining.  For
    winnow's tokenizers ``<|endoftext|>``; for an imported one its bos token (``<s>``), or its eos
    (the previous document's end) when it has none."""
    bos = getattr(tokenizer, "bos_id", None)
    return tokenizer.eot_id if bos is None else bos


def stop_ids(tokenizer) -> list[int]:
    """The ids that end generation: ``<|endoftext|>`` (``tokenizer.eot_id``, the end of a document)
    and ``<|end|>`` (the end of a chat turn).  A tokenizer without ``<|end|>`` (a pretraining-only
    import) gives only the first, so plain completion still works with it."""
    ids = [tokenizer.eot_id]  # the tokenizer's end-of-document role (an imported one may call it </s>)
    end = tokenizer.special_tokens.get(END)
    if end is not None and end not in ids:
        ids.append(end)
    return ids


def validate_messages(messages: Sequence[dict]) -> None:
    """``ChatFormatError`` naming the first bad message's index (extra keys are allowed)."""
    if not isinstance(messages, Sequence) or isinstance(messages, str | bytes):
        raise ChatFormatError(
            f"messages must be a list of {{role, content}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise ChatFormatError("messages is empty: a conversation needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatFormatError(f"message {i}: expected a dict with 'role' and 'content', got {m!r:.80}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ChatFormatError(f"message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if role == "system" and i != 0:
            raise ChatFormatError(f"message {i}: a system message is only allowed as the first message")
        if not isinstance(content, str):
            raise ChatFormatError(f"message {i}: content must be a string, got {type(content).__name__}")


def render_conversation(
    tokenizer, messages: Sequence[dict], max_tokens: int | None = None
) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a conversation, of equal length (see the module docstring).

    ``max_tokens`` truncation rule: ids and mask are cut to their first ``max_tokens`` entries (as
    nanochat does).  The start of the conversation is always kept; an assistant turn cut in the
    middle keeps its leading tokens in the loss but loses its ``<|end|>``.  A caller that wants only
    complete turns should drop rows whose mask sums to 0, or render fewer messages.
    """
    if max_tokens is not None and max_tokens < 1:
        raise ChatFormatError(f"max_tokens must be >= 1 (got {max_tokens})")
    validate_messages(messages)
    special = require_chat_tokens(tokenizer)
    ids, mask = [start_id(tokenizer)], [0]
    for m in messages:
        trained = int(m["role"] == "assistant")
        content = tokenizer.encode_ordinary(m["content"])  # special-token text stays text
        ids += [special[role_token(m["role"])], *content, special[END]]
        mask += [0] + [trained] * (len(content) + 1)
        if max_tokens is not None and len(ids) >= max_tokens:
            break
    if max_tokens is not None:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_for_completion(tokenizer, messages: Sequence[dict]) -> list[int]:
    """``render_conversation``'s ids for ``messages`` (the last one a user or system message)
    followed by ``<|assistant|>``, which opens the assistant turn for the model to write."""
    validate_messages(messages)
    if messages[-1]["role"] == "assistant":
        raise ChatFormatError(
            f"message {len(messages) - 1}: the last message must be a user or system message "
            "to open an assistant turn after it"
        )
    ids, _ = render_conversation(tokenizer, messages)
    return [*ids, require_chat_tokens(tokenizer)["<|assistant|>"]]
