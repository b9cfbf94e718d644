"""``winnow playground``: a local web page and HTTP API to try the models winnow trains.

The contract is DESIGN.md "Playground HTTP API": ``GET /`` (one static HTML file, no external
resources), ``GET /api/models``, ``POST /api/generate`` (server-sent events) and ``POST /api/tokenize``.

**Same output as ``winnow generate``.**  Greedy and sampling run ``train.generate.sample_steps``
and beam search ``train.generate.beam_search`` -- the functions ``winnow generate`` runs, with its
defaults (``GenerationConfig``), its seeded ``torch.Generator``, its end ids and its ``_TextState``
(incremental UTF-8 and stop strings) -- so a request and the CLI give the same ids and text for
the same settings and seed.  The model is wrapped in ``_Recorder``, which keeps the logits of the
last forward (for ``logprobs``) and raises ``Cancelled`` at the next forward once the client is gone:
no hook in ``train/generate.py`` is needed.  One difference, on purpose: a ``prompt``'s special-token
text (``<|endoftext|>`` typed by a user) is encoded as text, never as a control token (``winnow
generate`` trusts its prompts); prompts without such text get identical ids.

**Events.**  One ``data: {"text", "token_id", "logprob", "top"}`` per generated token (``text`` is
the delta that became safe to show: it never ends inside a UTF-8 character and holds back a possible
stop-string prefix); text released only when generation ends (held-back text, a trailing partial
character as U+FFFD) comes in a last event with ``token_id: null``; then ``data: {"done": true,
"finish_reason", "tokens", "seconds", "prompt_tokens"}``.  ``logprob`` and ``top`` are the model's
own distribution (softmax of its logits, before repetition penalty, temperature, top-k and top-p):
what the model believes, not what the sampler was allowed to draw from.  Beam search streams its
best hypothesis once the search ends (its tokens are only known then).

**Safety.**  Models are only the checkpoints given on the command line, looked up by id in a dict:
an id is never joined to a path.  A checkpoint folder's ``latest`` pointer must stay inside it.
Every field is validated before streaming (HTTP 4xx ``{"error", "field"}``); more than
``max_concurrent`` running generations answer 429; generation runs in its own thread, never on the
event loop; a client that disconnects stops its generation at the next token.

**A training folder follows its run.**  A folder given on the command line is served at its latest
checkpoint *now*: ``/api/models`` and every load re-read ``latest``, and a newer step replaces the
loaded weights, so a playground left open beside ``winnow train`` tries each new checkpoint without
a restart (cost: one small file read per request; a generation already running finishes on the
weights it started with).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

MAX_PROMPT_CHARS = 32_000
MAX_MESSAGES = 200
MAX_NEW_TOKENS = 2048
MAX_BEAMS = 8
MAX_LOGPROBS = 20
MAX_STOP = 8
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 2.0
MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_NEW_TOKENS = 128  # winnow generate's --max-new-tokens default
KINDS = {"pretrain": "base"}  # config.json's kind -> the API's; others pass through
GENERATE_FIELDS = {
    "model",
    "prompt",
    "messages",
    "strategy",
    "temperature",
    "top_k",
    "top_p",
    "num_beams",
    "length_penalty",
    "max_new_tokens",
    "repetition_penalty",
    "stop",
    "seed",
    "logprobs",
}


class RequestError(Exception):
    """Bad input: answered with ``status`` and ``{"error": message, "field": field}``."""

    def __init__(self, field: str | None, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


class Cancelled(Exception):
    """The client went away: raised inside the generation thread at the next forward."""


# --------------------------------------------------------------------------------------------------
# models


def _model_id(given: Path) -> str:
    """A name from the folder names (``OUT`` for OUT, OUT/checkpoints; ``OUT-step-N`` for a step)."""
    p = given.resolve()
    if p.name == "checkpoints":
        p = p.parent
    if re.fullmatch(r"step-\d+", p.name) and p.parent.name == "checkpoints":
        name = f"{p.parent.parent.name}-{p.name}"
    else:
        name = p.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"
    return name


def _lineage(meta: dict) -> list[str]:
    """Short lines: what this checkpoint was trained on and from what."""
    lines = []
    kind = meta.get("kind", "pretrain")
    if kind == "imported":
        lines.append(f"imported from {meta.get('source') or 'a Hugging Face folder'}")
    data = meta.get("data") or {}
    if data.get("files"):
        names = ", ".join(Path(str(f.get("path", "?"))).name for f in data["files"])
        lines.append(f"{kind} on {names} ({data.get('examples', '?')} examples)")
    if data.get("manifests"):
        names = ", ".join(Path(str(m.get("path", "?"))).name for m in data["manifests"])
        lines.append(f"{kind} on {names}")
    if meta.get("tokens"):
        lines.append(f"{int(meta['tokens']):,} training tokens")
    parent = meta.get("parent")
    while isinstance(parent, dict):
        pk = KINDS.get(parent.get("kind", "pretrain"), parent.get("kind"))
        lines.append(
            f"from {pk} {Path(str(parent.get('path', '?'))).parent.parent.name} step {parent.get('step')}"
        )
        parent = parent.get("parent")
    return lines


@dataclass
class Model:
    """One served checkpoint.  ``model``/``tokenizer`` load on first use (a corrupt checkpoint is an
    error for its requests; the server and the other models keep working)."""

    id: str
    given: Path
    dir: Path | None = None
    info: dict = field(default_factory=dict)
    error: str | None = None
    loaded: Any = None
    device: str = "cpu"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> None:
        """Fill ``dir``, ``info`` or ``error`` from config.json (no weights read)."""
        from train.checkpoint import resolve_checkpoint

        try:
            d = resolve_checkpoint(self.given).resolve()
            root = self.given.resolve()
            if d != root and not d.is_relative_to(root):
                raise ValueError(f"{self.given}'s latest checkpoint {d} lies outside it")
            meta = json.loads((d / "config.json").read_text())
            import torch

            from tokenizer.encoding import META_FILE
            from train.model import GPT, GPTConfig

            config = GPTConfig(**meta["model"])
            with torch.device("meta"):
                params = GPT(config).num_params()
            tok_meta = d / "tokenizer" / META_FILE
            specials = (
                json.loads(tok_meta.read_text()).get("special_tokens", {}) if tok_meta.is_file() else {}
            )
            self.dir, self.error = d, None
            self.info = {
                "kind": KINDS.get(meta.get("kind", "pretrain"), meta.get("kind")),
                "params": params,
                "step": meta.get("step"),
                "context": config.block_size,
                "vocab_size": config.vocab_size,
                "chat": "<|assistant|>" in specials,
                "lineage": _lineage(meta),
            }
        except Exception as e:  # listed with its error: the page shows it, the server keeps running
            self.dir, self.info = None, {}
            self.error = f"cannot read checkpoint {self.given}: {e}"

    def public(self) -> dict:
        out = {"id": self.id, "kind": None, "params": None, **self.info, "error": self.error}
        out["loaded"] = self.loaded is not None
        return out

    def refresh(self) -> None:
        """Follow a training run: when the folder's latest checkpoint is no longer the one described
        (a newer step was saved since), describe it again and drop the loaded weights, so the next
        request serves the new step.  Costs one ``latest`` read and a directory listing."""
        from train.checkpoint import resolve_checkpoint

        with self.lock:
            try:
                now = resolve_checkpoint(self.given).resolve()
            except Exception:
                return  # describe()/load() report the error; a vanished folder keeps what is loaded
            if now != self.dir:
                self.describe()
                self.loaded = None

    def load(self):
        """(model, tokenizer), loading once per checkpoint step; RequestError(500) when the
        checkpoint cannot be loaded."""
        self.refresh()
        with self.lock:
            if self.loaded is None:
                if self.dir is None:
                    self.describe()
                if self.error:
                    raise RequestError("model", f"model {self.id}: {self.error}", 500)
                from train.checkpoint import load_model

                try:
                    self.loaded = load_model(self.dir, device=self.device)
                except Exception as e:
                    raise RequestError("model", f"model {self.id}: cannot load {self.dir}: {e}", 500) from e
            return self.loaded


def build_models(paths: list[str | Path], device: str = "cpu") -> dict[str, Model]:
    """Id -> Model for the given folders; ids are unique (``-2``, ``-3`` appended)."""
    models: dict[str, Model] = {}
    for p in paths:
        base = _model_id(Path(p))
        mid, n = base, 2
        while mid in models:
            mid, n = f"{base}-{n}", n + 1
        m = Model(id=mid, given=Path(p), device=device)
        m.describe()
        models[mid] = m
    return models


# --------------------------------------------------------------------------------------------------
# validation


def _number(body: dict, name: str, lo: float, hi: float, *, integer: bool, lo_open: bool = False):
    v = body.get(name)
    if v is None:
        return None
    ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok_type or (not integer and not math.isfinite(v)):
        raise RequestError(name, f"{name} must be {'an integer' if integer else 'a number'} (got {v!r:.40})")
    if (v <= lo if lo_open else v < lo) or v > hi:
        span = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise RequestError(name, f"{name} must be in {span} (got {v})")
    return v


def parse_generate(body: Any, models: dict[str, Model]) -> tuple[Model, dict]:
    """Check every field of a /api/generate body; (model, settings).  Raises RequestError."""
    from train.generate import STRATEGIES

    if not isinstance(body, dict):
        raise RequestError(None, "the body must be a JSON object")
    unknown = sorted(set(body) - GENERATE_FIELDS)
    if unknown:
        raise RequestError(
            unknown[0], f"unknown field {unknown[0]!r} (known: {', '.join(sorted(GENERATE_FIELDS))})"
        )
    model = lookup(body.get("model"), models)
    prompt, messages = body.get("prompt"), body.get("messages")
    if (prompt is None) == (messages is None):
        raise RequestError("prompt", "give exactly one of prompt (completion) or messages (chat)")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise RequestError("prompt", "prompt must be a string")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise RequestError(
                "prompt", f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}"
            )
    else:
        from tokenizer.chat import ChatFormatError, validate_messages

        if isinstance(messages, list) and len(messages) > MAX_MESSAGES:
            raise RequestError("messages", f"{len(messages)} messages; the limit is {MAX_MESSAGES}")
        try:
            validate_messages(messages)
        except ChatFormatError as e:
            raise RequestError("messages", f"messages: {e}") from None
        chars = sum(len(m["content"]) for m in messages)
        if chars > MAX_PROMPT_CHARS:
            raise RequestError(
                "messages", f"messages hold {chars} characters; the limit is {MAX_PROMPT_CHARS}"
            )
    strategy = body.get("strategy", "greedy")
    if strategy not in STRATEGIES:
        raise RequestError(
            "strategy", f"strategy must be one of {', '.join(STRATEGIES)} (got {strategy!r:.40})"
        )
    stop = body.get("stop")
    if stop is None:
        stop = []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("stop", "stop must be a list of non-empty strings")
    if len(stop) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stop):
        raise RequestError("stop", f"at most {MAX_STOP} stop strings of at most {MAX_STOP_CHARS} characters")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise RequestError("seed", f"seed must be an integer in [0, 2**63) or null (got {seed!r:.40})")
    settings = {
        "prompt": prompt,
        "messages": messages,
        "strategy": strategy,
        "temperature": _number(body, "temperature", 0, MAX_TEMPERATURE, integer=False),
        "top_k": _number(body, "top_k", 1, 1_000_000, integer=True),
        "top_p": _number(body, "top_p", 0, 1, integer=False, lo_open=True),
        "num_beams": _number(body, "num_beams", 1, MAX_BEAMS, integer=True),
        "length_penalty": _number(body, "length_penalty", -10, 10, integer=False),
        "max_new_tokens": _number(body, "max_new_tokens", 1, MAX_NEW_TOKENS, integer=True),
        "repetition_penalty": _number(body, "repetition_penalty", 0, 10, integer=False, lo_open=True),
        "stop": stop,
        "seed": seed,
        "logprobs": _number(body, "logprobs", 0, MAX_LOGPROBS, integer=True) or 0,
    }
    return model, settings


def lookup(mid: Any, models: dict[str, Model]) -> Model:
    """The Model of an id from /api/models: a dict lookup, so a path (``../x``, ``/etc``) is only an
    unknown name and nothing is read for it."""
    if not isinstance(mid, str) or not mid:
        raise RequestError("model", "model must be a model id from /api/models")
    m = models.get(mid)
    if m is None:
        raise RequestError("model", f"unknown model {mid[:80]!r} (models: {', '.join(models)})", 404)
    return m


def generation_config(s: dict):
    """``GenerationConfig`` from checked settings, resolved (its own rules: e.g. temperature only
    with a sampling strategy) -- the same defaults as ``winnow generate``."""
    from train.generate import GenerationConfig

    cfg = GenerationConfig(
        strategy=s["strategy"],
        max_new_tokens=s["max_new_tokens"] or DEFAULT_MAX_NEW_TOKENS,
        temperature=s["temperature"],
        top_k=s["top_k"],
        top_p=s["top_p"],
        num_beams=s["num_beams"],
        length_penalty=1.0 if s["length_penalty"] is None else s["length_penalty"],
        repetition_penalty=1.0 if s["repetition_penalty"] is None else s["repetition_penalty"],
        stop=tuple(s["stop"]),
        seed=s["seed"],
    )
    try:
        return cfg.resolved()
    except ValueError as e:
        msg = str(e).removeprefix("invalid generation settings: ")
        name = next(
            (f for f in ("temperature", "top_k", "top_p", "num_beams", "length_penalty") if f in msg), None
        )
        raise RequestError(name or "strategy", msg) from None


def prompt_ids(tokenizer, s: dict) -> list[int]:
    """Completion: the start token (as ``winnow generate``) + the prompt encoded as text; chat:
    ``render_for_completion`` (message text stays text there too)."""
    from tokenizer.chat import ChatFormatError, render_for_completion, start_id

    if s["prompt"] is not None:
        return [start_id(tokenizer), *tokenizer.encode_ordinary(s["prompt"])]
    try:
        return render_for_completion(tokenizer, s["messages"])
    except ChatFormatError as e:
        raise RequestError("messages", f"messages: {e}") from None


# --------------------------------------------------------------------------------------------------
# generation (runs in a worker thread)


class _Recorder:
    """The model, as ``sample_steps``/``beam_search`` call it, keeping the last forward's logits and
    stopping the generation (``Cancelled``) once ``cancel`` is set."""

    def __init__(self, model, cancel: threading.Event):
        self.model, self.cancel, self.last = model, cancel, None

    def __call__(self, *args, **kwargs):
        if self.cancel.is_set():
            raise Cancelled
        self.last = self.model(*args, **kwargs)
        return self.last

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def _token_text(tokenizer, tok: int) -> str:
    return tokenizer.token_bytes(tok).decode("utf-8", errors="replace")


def _alternatives(tokenizer, logits, tok: int, k: int) -> tuple[float, list[dict]]:
    """(log-probability of ``tok``, the k most likely tokens) under the model's own distribution."""
    import torch

    lp = torch.log_softmax(logits.float(), dim=-1)
    top = []
    if k:
        vals, ids = torch.topk(lp, min(k, lp.numel()))
        top = [
            {"token_id": int(i), "text": _token_text(tokenizer, int(i)), "logprob": round(float(v), 5)}
            for v, i in zip(vals.tolist(), ids.tolist())
        ]
    return round(float(lp[tok]), 5), top


def run_generation(
    model,
    tokenizer,
    ids: list[int],
    cfg,
    logprobs: int,
    emit: Callable[[dict], None],
    cancel: threading.Event,
) -> dict:
    """Generate for one prompt, calling ``emit`` with each token event; returns the done event.
    The ids and text are those of ``train.generate.generate`` for the same ``cfg`` (see the module
    docstring)."""
    import dataclasses

    import torch

    from train.generate import _TextState, beam_search, end_ids, make_generator, sample_steps, spare_ids

    cfg = dataclasses.replace(cfg, banned_ids=spare_ids(model, tokenizer))  # as winnow generate

    start = time.perf_counter()
    rec = _Recorder(model, cancel)
    state = _TextState(tokenizer, cfg.stop)
    eos = set(end_ids(tokenizer))
    count = 0

    def token_event(tok: int, logits) -> None:
        nonlocal count
        delta = state.push(tok)
        lp, top = _alternatives(tokenizer, logits, tok, logprobs)
        count += 1
        emit({"text": delta, "token_id": tok, "logprob": lp, "top": top})

    try:
        if cfg.strategy == "beam":

            def is_stopped(hyp: list[int]) -> bool:
                return any(s in tokenizer.decode(hyp) for s in cfg.stop)

            ((hyp, _score, reason),) = beam_search(
                rec,
                [ids],
                cfg,
                eos_id=eos,
                pad_id=tokenizer.pad_id,
                is_stopped=is_stopped if cfg.stop else None,
            )
            with torch.no_grad():  # the model's distribution at each chosen token, in one forward
                seq = torch.tensor([ids + hyp], device=model.rope_cos.device)
                logits = model(seq)[0, len(ids) - 1 :] if hyp else None
            for i, tok in enumerate(hyp):
                if cancel.is_set():
                    raise Cancelled
                token_event(tok, logits[i])
                if state.finish_reason:
                    break
            final = state.finish("eot" if reason == "eos" else reason)
        else:
            generator = make_generator(cfg.seed, model.rope_cos.device)
            steps = sample_steps(rec, [ids], cfg, pad_id=tokenizer.pad_id, generator=generator)
            final = None
            try:
                for nxt in steps:
                    tok = int(nxt[0])
                    if tok in eos:
                        final = state.finish("eot")
                        break
                    token_event(tok, rec.last[0, -1])
                    if state.finish_reason:
                        final = state.finish("stop")
                        break
            finally:
                steps.close()
            if final is None:
                final = state.finish("length")
        if final:
            emit({"text": final, "token_id": None, "logprob": None, "top": []})
        reason = state.finish_reason
    except Cancelled:
        reason = "cancelled"
    return {
        "done": True,
        "finish_reason": reason,
        "tokens": count,
        "prompt_tokens": len(ids),
        "seconds": round(time.perf_counter() - start, 4),
    }


MAX_NEXT_TOKENS_SHOWN = 50


def next_token_distribution(model, tokenizer, ids: list[int], generated: list[int], cfg, k: int) -> dict:
    """The distribution of the token after ``ids + generated``, as the sampler sees it: the model's
    probabilities (``p_model``), after temperature (``p_temperature``; sampling strategies) and what
    the sampler finally draws from after top-k / top-p (``p_final``, 0 = cut away), for the ``k`` most
    likely tokens (``train.generate.process_logits``: the same steps in the same order)."""
    import dataclasses

    import torch

    from train.generate import SAMPLING, process_logits, spare_ids

    cfg = dataclasses.replace(cfg, banned_ids=spare_ids(model, tokenizer))  # what the sampler draws from
    seq = ids + generated
    with torch.no_grad():
        logits = model(torch.tensor([seq], device=model.rope_cos.device), last_only=True)[0, -1].float()
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros(1, logits.numel(), dtype=torch.bool, device=logits.device)
        seen[0, torch.tensor(seq, device=logits.device)] = True
    p_model = logits.softmax(-1)
    p_temp = (logits / cfg.temperature).softmax(-1) if cfg.strategy in SAMPLING else None
    final = process_logits(logits[None], cfg, seen)[0]
    p_final = final.softmax(-1)
    kept = int(torch.isfinite(final).sum())
    vals, order = torch.topk(p_model, min(k, p_model.numel()))
    rows = []
    for p, i in zip(vals.tolist(), order.tolist()):
        rows.append(
            {
                "token_id": i,
                "text": _token_text(tokenizer, i),
                "p_model": round(p, 6),
                "p_temperature": None if p_temp is None else round(float(p_temp[i]), 6),
                "p_final": round(float(p_final[i]), 6),
                "kept": bool(torch.isfinite(final[i])),
            }
        )
    return {
        "position": len(generated),
        "strategy": cfg.strategy,
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "top_p": cfg.top_p,
        "kept": kept,  # tokens the sampler can draw (greedy/beam: all, it takes the top one)
        "kept_model_mass": round(float(p_model[torch.isfinite(final)].sum()), 6),
        "tokens": rows,
    }


# --------------------------------------------------------------------------------------------------
# the app


class Playground:
    """Served models, the concurrency bound and a record of recent generations (for tests)."""

    def __init__(self, checkpoints: list[str | Path], max_concurrent: int = 2, device: str = "cpu"):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.models = build_models(checkpoints, device)
        self.max_concurrent = max_concurrent
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.active = 0
        self.recent: deque[dict] = deque(maxlen=50)
        self._lock = threading.Lock()

    def page(self) -> str:
        return resources.files("train").joinpath("playground.html").read_text(encoding="utf-8")


def _error(e: RequestError) -> JSONResponse:
    headers = {"Retry-After": "1"} if e.status == 429 else None
    return JSONResponse({"error": e.message, "field": e.field}, status_code=e.status, headers=headers)


async def _json_body(request) -> Any:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
        raise RequestError(None, f"the body is over {MAX_BODY_BYTES} bytes", 413)
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(None, f"the body is over {MAX_BODY_BYTES} bytes", 413)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(None, f"the body is not JSON: {e}") from None


def create_app(pg: Playground) -> FastAPI:
    """The FastAPI app of DESIGN "Playground HTTP API"."""
    app = FastAPI(title="winnow playground", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.playground = pg

    @app.get("/")
    def index() -> HTMLResponse:
        # the page talks to this origin only; the policy makes any other request fail loudly
        csp = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src data:"
        )
        return HTMLResponse(pg.page(), headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})

    @app.get("/api/models")
    def models() -> JSONResponse:
        for m in pg.models.values():
            m.refresh()
        return JSONResponse([m.public() for m in pg.models.values()])

    @app.post("/api/tokenize")
    async def tokenize(request: Request):
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise RequestError(None, "the body must be a JSON object")
            unknown = sorted(set(body) - {"model", "text", "messages"})
            if unknown:
                raise RequestError(unknown[0], f"unknown field {unknown[0]!r} (known: model, text, messages)")
            m = lookup(body.get("model"), pg.models)
            text, messages = body.get("text"), body.get("messages")
            if (text is None) == (messages is None):
                raise RequestError("text", "give exactly one of text or messages")
            if text is not None and (not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS):
                raise RequestError("text", f"text must be a string of at most {MAX_PROMPT_CHARS} characters")
            _, tok = await run_in_threadpool(m.load)
            if text is not None:
                ids = tok.encode_ordinary(text)  # as text: the page's text never becomes control tokens
            else:
                settings = {"prompt": None, "messages": messages}
                parse_generate({"model": m.id, "messages": messages}, pg.models)
                ids = prompt_ids(tok, settings)
        except RequestError as e:
            return _error(e)
        return JSONResponse({"tokens": [{"id": i, "text": _token_text(tok, i)} for i in ids]})

    @app.post("/api/next_token")
    async def next_token(request: Request):
        """Not in DESIGN's contract (an addition for the page's next-token view): ``{"model",
        "prompt" | "messages", "generated": [ids so far], "strategy", "temperature", "top_k",
        "top_p", "repetition_penalty", "k"}`` -> ``next_token_distribution``."""
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise RequestError(None, "the body must be a JSON object")
            extra = {f: body.pop(f) for f in ("generated", "k") if f in body}
            if any(f in body for f in ("num_beams", "max_new_tokens", "stop", "seed", "logprobs")):
                bad = next(
                    f for f in ("num_beams", "max_new_tokens", "stop", "seed", "logprobs") if f in body
                )
                raise RequestError(bad, f"{bad} does not apply to the next-token view")
            m, settings = parse_generate(body, pg.models)
            cfg = generation_config(settings)
            k = _number(extra, "k", 1, MAX_NEXT_TOKENS_SHOWN, integer=True) or 20
            model, tok = await run_in_threadpool(m.load)
            generated = extra.get("generated") or []
            V = model.config.vocab_size
            if (
                not isinstance(generated, list)
                or len(generated) > MAX_NEW_TOKENS
                or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < V for t in generated)
            ):
                raise RequestError(
                    "generated", f"generated must be a list of at most {MAX_NEW_TOKENS} ids < {V}"
                )
            ids = prompt_ids(tok, settings)
            if len(ids) + len(generated) > model.config.block_size:
                raise RequestError(
                    "generated", f"prompt + generated exceed the context of {model.config.block_size}"
                )
            if not pg.slots.acquire(blocking=False):
                raise RequestError(None, f"busy: {pg.max_concurrent} generation(s) already running", 429)
            try:
                out = await run_in_threadpool(next_token_distribution, model, tok, ids, generated, cfg, k)
            finally:
                pg.slots.release()
        except RequestError as e:
            return _error(e)
        return JSONResponse(out)

    @app.post("/api/generate")
    async def generate(request: Request):
        try:
            body = await _json_body(request)
            m, settings = parse_generate(body, pg.models)
            cfg = generation_config(settings)
            model, tok = await run_in_threadpool(m.load)
            ids = prompt_ids(tok, settings)
            if len(ids) >= model.config.block_size:
                raise RequestError(
                    "messages" if settings["prompt"] is None else "prompt",
                    f"the prompt is {len(ids)} tokens; model {m.id}'s context is {model.config.block_size} "
                    "tokens and must leave room for at least one new token",
                )
            if not pg.slots.acquire(blocking=False):
                raise RequestError(
                    None,
                    f"busy: {pg.max_concurrent} generation(s) already running (the bound); retry later",
                    429,
                )
        except RequestError as e:
            return _error(e)

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: dict) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        def work() -> None:
            with pg._lock:
                pg.active += 1
            done: dict = {"done": True, "finish_reason": "error", "tokens": 0, "seconds": 0.0}
            try:
                done = run_generation(model, tok, ids, cfg, settings["logprobs"], emit, cancel)
            except Exception as e:  # after streaming began: reported in the stream, the server lives on
                done["error"] = f"{type(e).__name__}: {e}"
            finally:
                with pg._lock:
                    pg.active -= 1
                pg.recent.append({"model": m.id, **done})
                pg.slots.release()
                with contextlib.suppress(RuntimeError):  # the loop is closed (server shutting down)
                    loop.call_soon_threadsafe(queue.put_nowait, done)

        # the thread starts before the response, so its slot is always released by it
        threading.Thread(target=work, name=f"generate-{m.id}", daemon=True).start()

        async def events():
            try:
                while True:
                    event = await queue.get()
                    yield "data: " + json.dumps(event, ensure_ascii=False) + "\n\n"
                    if event.get("done"):
                        return
            finally:  # normal end, or the client disconnected (this generator is cancelled)
                cancel.set()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app


# --------------------------------------------------------------------------------------------------
# CLI


def main(args: argparse.Namespace) -> int:
    import uvicorn

    if not args.checkpoint:
        print("winnow playground: give at least one --checkpoint DIR", file=sys.stderr)
        return 2
    from train.generate import resolve_device

    try:
        # the device winnow generate picks for the same flag, so both give the same ids
        device = str(resolve_device(args.device))
        pg = Playground(args.checkpoint, max_concurrent=args.max_concurrent, device=device)
    except ValueError as e:
        print(f"winnow playground: {e}", file=sys.stderr)
        return 2
    for m in pg.models.values():
        state = f"error: {m.error}" if m.error else f"{m.info['kind']}, {m.info['params']:,} parameters"
        print(f"  {m.id}: {state}", file=sys.stderr)
    print(f"winnow playground: http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(create_app(pg), host=args.host, port=args.port, log_level="warning")
    return 0
