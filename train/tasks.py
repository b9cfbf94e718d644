"""Verifiable-reward tasks for ``winnow train grpo``: the built-in ``arithmetic`` task and a user's
``MODULE:FUNCTION`` verifier with its ``--prompts`` items.

**arithmetic.**  Problems ``"What is A + B?"`` with operands of ``digits`` decimal digits (0 to
10^digits − 1; ``"2,1"``: A of 2 digits, B of 1), all of them enumerated and shuffled by the seed; the first
``val_size`` are held back for ``val_accuracy``, the rest are the training items, so the two sets
are disjoint by construction and the same for a seed.  The reward reads the answer from the prompt
itself (``arithmetic_reward``): 1.0 when the completion's *last* integer equals A + B, else 0.0, so
"The answer is 81" and "81" both count and a completion that changes its mind is judged by its final
number.  Default 2 digits (10,000 problems, answers 0 to 198): a 0.46M-parameter byte-level
model SFT'd on 9,000 of them for 800 steps (3-5 minutes on one CPU thread) got the first number
right on 7.8 % of 500 held-out problems in one run and 89.6 % in another (other SFT replies, same
seed): at this size the skill arrives abruptly, so both ends are in reach (bench/README.md).
``sft_rows`` emits prompt/response rows of *training* items only, for the SFT starting point.

**A user's verifier** (``--task MODULE:FUNCTION``): MODULE is a dotted module importable from the
working directory, or a path to a ``.py`` file; ``FUNCTION(prompt: str, completion: str) -> float``.
``prompt`` is the item's last user message, ``completion`` the decoded reply without its end token.
A function that also takes an ``item`` keyword (or ``**kwargs``) gets the whole prompt row as
``item=`` too (its other fields: a reference answer, test cases), as TRL passes dataset columns.
An import error, a missing name or a signature that cannot take ``(prompt, completion)`` is a
UsageError (exit 2) before any training.  An exception raised inside the verifier for one
completion, or a value that is not a finite number, scores that completion **0** and is counted
(``reward_errors`` in metrics.jsonl, and the first message of each kind is logged once): one bad
completion must not kill an hour of training, and a count that grows says the verifier is wrong.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.loop import UsageError
from train.rollout import read_prompt_rows

ARITHMETIC = "arithmetic"
_QUESTION = re.compile(r"What is (-?\d+) \+ (-?\d+)\?")
_INTEGER = re.compile(r"-?\d+")


@dataclass
class Item:
    """One prompt of a task: the messages rendered for the policy, the ``prompt`` string the
    verifier sees, and the row's fields (``item=`` of a verifier that asks for it)."""

    messages: list[dict]
    prompt: str
    row: dict = field(default_factory=dict)


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def arithmetic_reward(prompt: str, completion: str) -> float:
    """1.0 when the completion's last integer is A + B of the prompt's ``What is A + B?``, else 0."""
    m = _QUESTION.search(prompt)
    if m is None:
        raise ValueError(f"not an arithmetic prompt (expected 'What is A + B?'): {prompt!r:.60}")
    numbers = _INTEGER.findall(completion)
    return float(bool(numbers) and int(numbers[-1]) == int(m.group(1)) + int(m.group(2)))


def parse_digits(digits: int | str) -> tuple[int, int]:
    """``2`` → (2, 2): both operands of 2 digits; ``"2,1"`` → (2, 1): A of 2 digits, B of 1."""
    try:
        parts = [int(x) for x in str(digits).split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(1 <= d <= 4 for d in parts):
        raise UsageError(f"--digits must be D or D1,D2 with each in [1, 4] (got {digits!r})")
    return parts[0], parts[1]


def arithmetic_items(seed: int, digits: int | str, val_size: int) -> tuple[list[Item], list[Item]]:
    """(train, val) items: every problem with operands of ``digits`` digits (``parse_digits``),
    shuffled by ``seed``; the first ``val_size`` are validation.  10^(d1+d2) problems (2: 10,000)."""
    d1, d2 = parse_digits(digits)
    n1, n2 = 10**d1, 10**d2
    total = n1 * n2
    if not 0 <= val_size < total:
        raise UsageError(f"--val-size must be in [0, {total}) for --digits {digits} (got {val_size})")
    order = np.random.default_rng([seed, d1, d2]).permutation(total)
    items = []
    for k in order.tolist():
        a, b = divmod(k, n2)
        q = question(a, b)
        items.append(Item([{"role": "user", "content": q}], q, {"prompt": q, "answer": a + b}))
    return items[val_size:], items[:val_size]


def sft_rows(seed: int, digits: int | str, val_size: int, n: int, hedge: float = 0.0) -> list[dict]:
    """``n`` prompt/response rows (``{"prompt": "What is A + B?", "response": "S"}``) from the
    *training* items of (seed, digits, val_size): an SFT set that never shows a validation problem.

    ``hedge``: the share of replies that add a second, wrong guess (``"S, or maybe S±10"``, the
    carry slip), as imperfect demonstrations do; the verifier judges the *last* number, so a model
    that learned to hedge loses those answers and RL has a behaviour to remove (bench/grpo_arithmetic.py)."""
    train, _ = arithmetic_items(seed, digits, val_size)
    if n > len(train):
        raise UsageError(f"{n} SFT rows asked, {len(train)} training problems exist")
    rng = np.random.default_rng([seed, 7])
    rows = []
    for it in train[:n]:
        s = it.row["answer"]
        reply = str(s)
        if rng.random() < hedge:
            reply += f", or maybe {s + 10 if s < 10 or rng.random() < 0.5 else s - 10}"
        rows.append({"prompt": it.prompt, "response": reply})
    return rows


# --------------------------------------------------------------------------------------------------
# A user's verifier


def _import(module: str):
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = Path(module)
        if not path.is_file():
            raise UsageError(f"--task {module}: no such file")
        name = f"winnow_verifier_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:  # the file's own error, whatever it is: reported, not raised
            raise UsageError(
                f"--task {module}: importing the file failed: {type(exc).__name__}: {exc}"
            ) from None
        return mod
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # "importable from the working directory" also under a console script
    try:
        return importlib.import_module(module)
    except Exception as exc:
        raise UsageError(f"--task {module}: cannot import module ({type(exc).__name__}: {exc})") from None


def load_verifier(spec: str) -> tuple[Callable[..., float], bool]:
    """(function, whether it takes ``item=``) of ``MODULE:FUNCTION``; UsageError naming the problem."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise UsageError(
            f"--task {spec!r}: expected 'arithmetic' or MODULE:FUNCTION (MODULE a dotted name or a .py path)"
        )
    fn = getattr(_import(module), name, None)
    if fn is None:
        raise UsageError(f"--task {spec}: module {module} has no attribute {name!r}")
    if not callable(fn):
        raise UsageError(f"--task {spec}: {name} is a {type(fn).__name__}, not a function")
    try:
        sig = inspect.signature(fn)
        sig.bind("prompt", "completion")
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"--task {spec}: {name} must take (prompt: str, completion: str) and return a float ({exc})"
        ) from None
    params = sig.parameters.values()
    takes_item = "item" in sig.parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return fn, takes_item


class Verifier:
    """Scores completions with a task's function; an exception or a non-finite value scores 0 and is
    counted (``errors``), its first message of each kind logged once."""

    def __init__(self, fn: Callable[..., float], *, takes_item: bool = False, log=lambda *a: None):
        self.fn, self.takes_item, self.log = fn, takes_item, log
        self.errors = 0
        self._seen: set[str] = set()

    def _error(self, kind: str, message: str) -> float:
        self.errors += 1
        if kind not in self._seen:
            self._seen.add(kind)
            self.log(f"verifier: {message} (scored 0 and counted in reward_errors; logged once)")
        return 0.0

    def __call__(self, item: Item, completion: str) -> float:
        try:
            value = (
                self.fn(item.prompt, completion, item=item.row)
                if self.takes_item
                else self.fn(item.prompt, completion)
            )
        except Exception as exc:  # any error of user code on one completion: counted, never fatal
            return self._error(type(exc).__name__, f"raised {type(exc).__name__}: {exc}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            return self._error("type", f"returned {type(value).__name__} {value!r:.40}, not a number")
        if not math.isfinite(value):
            return self._error("finite", f"returned {value}, not a finite number")
        return value


def _last_user(messages: list[dict]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def file_items(path: str | Path) -> list[Item]:
    """The items of a ``--prompts`` / ``--val`` file (``train.rollout.read_prompt_rows``)."""
    return [Item(messages, _last_user(messages), row) for messages, row in read_prompt_rows(path)]


@dataclass
class TaskSpec:
    """A resolved task: train and validation items, the verifier, and what the checkpoint records."""

    train: list[Item]
    val: list[Item]
    verifier: Verifier
    lineage: dict


def resolve_task(run: dict, log=lambda *a: None) -> TaskSpec:
    """The task of a run's settings (``task``, ``prompts``, ``val``, ``val_fraction``, ``digits``,
    ``val_size``, ``seed``)."""
    import hashlib

    from train.sft import _split

    task, prompts = run["task"], run["prompts"]
    if not task:
        raise UsageError("--task is required: arithmetic, or MODULE:FUNCTION with --prompts FILE.jsonl")
    if task == ARITHMETIC:
        fn, takes_item = arithmetic_reward, False
    else:
        fn, takes_item = load_verifier(task)
        if not prompts:
            raise UsageError(
                f"--task {task}: --prompts FILE.jsonl is required (a verifier's items come from a file)"
            )
    lineage: dict = {"task": task}
    if prompts:
        train = file_items(prompts)
        sha = hashlib.sha256(Path(prompts).read_bytes()).hexdigest()
        lineage["files"] = [{"path": prompts, "rows": len(train), "sha256": sha}]  # as SFT's data.files
        if run["val"]:
            val = file_items(run["val"])
            lineage["val"] = {"path": run["val"], "rows": len(val)}
        elif run["val_fraction"]:
            train, val = _split(train, run["val_fraction"], run["seed"])
            lineage["val"] = {"fraction": run["val_fraction"], "rows": len(val), "seed": run["seed"]}
        else:
            val = []
    else:
        if run["val"] or run["val_fraction"]:
            raise UsageError("--task arithmetic makes its own held-back items (--val-size N); --val and "
                             "--val-fraction apply to --prompts files")  # fmt: skip
        train, val = arithmetic_items(run["seed"], run["digits"], run["val_size"])
        lineage.update(digits=run["digits"], val_size=run["val_size"], seed=run["seed"], items=len(train))
    return TaskSpec(train, val, Verifier(fn, takes_item=takes_item, log=log), lineage)
