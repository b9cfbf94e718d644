"""`winnow playground`: the HTTP API of DESIGN "Playground HTTP API" and its page in headless Chromium.

Models are tiny GPTs over a byte-level tokenizer (token id = byte): a random one for the decoding
strategies, a "speller" that always writes a fixed text, and a chat speller.  API tests use
Starlette's TestClient; the concurrency bound and disconnects use a real uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from tinygpt import bigram_gpt, byte_tokenizer_dir, chain_table, tiny_gpt  # noqa: E402

from train import playground as pgmod  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.generate import GenerationConfig, generate  # noqa: E402
from train.playground import Playground, create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ARTIFACTS.mkdir(exist_ok=True)
SPELL = "Hi é!XY"  # distinct bytes, one 2-byte character
REPLY = "Sure!"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """{"random": output dir, "speller": ..., "chat": ...} and the tokenizer."""
    from tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("pg")
    tok = Tokenizer.from_dir(byte_tokenizer_dir(root / "tokenizer"))
    random_model = tiny_gpt(tok.vocab_size, block_size=256)
    speller = bigram_gpt(chain_table(tok.vocab_size, [tok.eot_id, *SPELL.encode(), tok.eot_id]))
    chat = bigram_gpt(
        chain_table(
            tok.vocab_size,
            [tok.special_tokens["<|assistant|>"], *REPLY.encode(), tok.special_tokens["<|end|>"]],
        )
    )
    out = {}
    for name, model, meta in (
        ("random", random_model, {"kind": "pretrain", "tokens": 12345}),
        ("speller", speller, {"kind": "pretrain"}),
        (
            "chat",
            chat,
            {
                "kind": "sft",
                "parent": {
                    "path": str(root / "random" / "checkpoints" / "step-00000001"),
                    "step": 1,
                    "kind": "pretrain",
                },
                "data": {"files": [{"path": "/data/chats.jsonl"}], "examples": 7},
            },
        ),
    ):
        save_checkpoint(root / name, 1, model, tokenizer_dir=tok.path, meta=meta, trainer_state=None)
        out[name] = root / name
    return out, tok, {"random": random_model, "speller": speller, "chat": chat}


@pytest.fixture(scope="module")
def client(ckpts):
    dirs, _, _ = ckpts
    pg = Playground([dirs["random"], dirs["speller"], dirs["chat"]])
    with TestClient(create_app(pg)) as c:
        yield c


def events(text: str) -> list[dict]:
    """The ``data:`` events of an SSE body, in order."""
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            out.append(json.loads(block[len("data: ") :]))
    return out


def stream(client, body: dict) -> tuple[list[dict], dict]:
    r = client.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    evs = events(r.text)
    assert evs[-1]["done"] is True and all("done" not in e for e in evs[:-1])
    return evs[:-1], evs[-1]


# --- models ---------------------------------------------------------------------------------------


def test_models_are_the_given_checkpoints_only(client, ckpts):
    _, _, models = ckpts
    listed = client.get("/api/models").json()
    assert [m["id"] for m in listed] == ["random", "speller", "chat"]
    by_id = {m["id"]: m for m in listed}
    assert by_id["random"]["kind"] == "base" and by_id["chat"]["kind"] == "sft"
    assert by_id["random"]["params"] == models["random"].num_params()
    assert by_id["random"]["context"] == 256 and by_id["chat"]["chat"] is True
    assert any("chats.jsonl" in line for line in by_id["chat"]["lineage"])
    assert any(line == "from base random step 1" for line in by_id["chat"]["lineage"])
    assert all("/" not in m["id"] for m in listed)


def test_ids_are_unique_names_and_a_missing_checkpoint_is_listed_with_its_error(ckpts, tmp_path):
    dirs, _, _ = ckpts
    pg = Playground([dirs["random"], dirs["random"] / "checkpoints", tmp_path / "gone"])
    with TestClient(create_app(pg)) as c:
        listed = c.get("/api/models").json()
        assert [m["id"] for m in listed] == ["random", "random-2", "gone"]
        assert "does not exist" in listed[2]["error"]
        r = c.post("/api/generate", json={"model": "gone", "prompt": "x"})
        assert r.status_code == 500 and r.json()["field"] == "model" and "does not exist" in r.json()["error"]
        assert c.get("/api/models").status_code == 200  # the server keeps running


@pytest.mark.parametrize(
    "mid",
    [
        "../random",
        "random/../random",
        "/etc/passwd",
        "..",
        "random/checkpoints",
        "%2e%2e%2frandom",
        "RANDOM",
        "",
    ],
)
def test_a_model_id_is_never_a_path(client, ckpts, mid):
    dirs, _, _ = ckpts
    for body in ({"model": mid, "prompt": "x"}, {"model": mid, "text": "x"}):
        path = "/api/generate" if "prompt" in body else "/api/tokenize"
        r = client.post(path, json=body)
        assert r.status_code == (400 if mid == "" else 404), r.text
        assert r.json()["field"] == "model"
    r = client.post("/api/generate", json={"model": str(dirs["random"]), "prompt": "x"})
    assert r.status_code == 404  # the real folder's path is not an id either


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field", "status"),
    [
        ({"prompt": "x" * (pgmod.MAX_PROMPT_CHARS + 1)}, "prompt", 400),
        ({"prompt": 5}, "prompt", 400),
        ({"prompt": None, "messages": None}, "prompt", 400),
        ({"messages": [{"role": "user", "content": "hi"}]}, "prompt", 400),  # both given
        ({"prompt": "x" * 300}, "prompt", 400),  # over the model's context of 256 tokens
        ({"max_new_tokens": pgmod.MAX_NEW_TOKENS + 1}, "max_new_tokens", 400),
        ({"max_new_tokens": 0}, "max_new_tokens", 400),
        ({"max_new_tokens": 2.5}, "max_new_tokens", 400),
        ({"strategy": "beam", "num_beams": pgmod.MAX_BEAMS + 1}, "num_beams", 400),
        ({"strategy": "nucleus"}, "strategy", 400),
        ({"strategy": "sample", "temperature": 2.5}, "temperature", 400),
        ({"strategy": "sample", "temperature": -0.1}, "temperature", 400),
        ({"strategy": "sample", "temperature": "hot"}, "temperature", 400),
        ({"temperature": 0.7}, "temperature", 400),  # greedy: temperature does not apply
        ({"strategy": "top_k", "top_k": 0}, "top_k", 400),
        ({"strategy": "top_k", "top_k": True}, "top_k", 400),
        ({"strategy": "top_p", "top_p": 0}, "top_p", 400),
        ({"strategy": "top_p", "top_p": 1.5}, "top_p", 400),
        ({"num_beams": 2}, "num_beams", 400),  # greedy: beams do not apply
        ({"repetition_penalty": 0}, "repetition_penalty", 400),
        ({"stop": [""]}, "stop", 400),
        ({"stop": [1]}, "stop", 400),
        ({"stop": ["a"] * (pgmod.MAX_STOP + 1)}, "stop", 400),
        ({"seed": "1"}, "seed", 400),
        ({"seed": 1.5}, "seed", 400),
        ({"seed": -1}, "seed", 400),
        ({"logprobs": 21}, "logprobs", 400),
        ({"logprobs": -1}, "logprobs", 400),
        ({"bogus": 1}, "bogus", 400),
    ],
)
def test_every_bad_field_is_a_4xx_naming_it(client, extra, field, status):
    body = {"model": "random", "prompt": "Hello", **extra}
    r = client.post(
        "/api/generate", json={k: v for k, v in body.items() if not (k == "prompt" and v is None)}
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["field"] == field and field in r.json()["error"], r.json()


def test_bad_messages_and_bodies(client):
    for messages in ([], [{"role": "robot", "content": "x"}], [{"role": "user"}], "hi"):
        r = client.post("/api/generate", json={"model": "chat", "messages": messages})
        assert r.status_code == 400 and r.json()["field"] == "messages", r.text
    r = client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = client.post("/api/generate", json=[1, 2])
    assert r.status_code == 400


# --- same output as winnow generate -------------------------------------------------------------


SETTINGS = [
    {},
    {"strategy": "sample", "seed": 3},
    {"strategy": "top_k", "top_k": 5, "seed": 4, "temperature": 0.8},
    {"strategy": "top_p", "seed": 5},
    {"strategy": "beam", "num_beams": 3},
    {"repetition_penalty": 1.3, "max_new_tokens": 30},
    {"strategy": "sample", "seed": 6, "stop": ["a", "e"]},
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_same_ids_and_text_as_train_generate(client, ckpts, settings):
    _, tok, models = ckpts
    s = {"max_new_tokens": 24, **settings}
    toks, done = stream(client, {"model": "random", "prompt": "The river", **s})
    want = generate(models["random"], tok, "The river", GenerationConfig(**s))[0]
    assert [e["token_id"] for e in toks if e["token_id"] is not None] == want.token_ids
    assert "".join(e["text"] for e in toks) == want.text
    assert done["finish_reason"] == want.finish_reason
    assert done["tokens"] == len(want.token_ids) and done["prompt_tokens"] == want.prompt_tokens
    assert done["seconds"] >= 0


def test_a_seed_reproduces_and_another_seed_differs(client):
    body = {"model": "random", "prompt": "a", "strategy": "sample", "max_new_tokens": 40}
    runs = [stream(client, {**body, "seed": s})[0] for s in (1, 1, 2)]
    ids = [[e["token_id"] for e in r] for r in runs]
    assert ids[0] == ids[1] != ids[2]


def test_same_as_the_cli_json(client, ckpts):
    dirs, _, _ = ckpts
    argv = [
        "--strategy",
        "top_p",
        "--top-p",
        "0.95",
        "--seed",
        "11",
        "--max-new-tokens",
        "20",
        "--stop",
        "zz",
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "generate",
            "--checkpoint",
            str(dirs["random"]),
            "--prompt",
            "Once upon",
            "--json",
            "--device",
            "cpu",
            *argv,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    (cli,) = [json.loads(x) for x in out.splitlines()]
    toks, done = stream(
        client,
        {
            "model": "random",
            "prompt": "Once upon",
            "strategy": "top_p",
            "top_p": 0.95,
            "seed": 11,
            "max_new_tokens": 20,
            "stop": ["zz"],
        },
    )
    assert [e["token_id"] for e in toks if e["token_id"] is not None] == cli["token_ids"]
    assert "".join(e["text"] for e in toks) == cli["text"]
    assert done["finish_reason"] == cli["finish_reason"]


def test_deltas_never_split_a_character_and_stop_strings_are_held_back(client):
    toks, done = stream(client, {"model": "speller", "prompt": "", "max_new_tokens": 20})
    assert [e["text"] for e in toks] == ["H", "i", " ", "", "é", "!", "X", "Y"]  # é: 2 tokens, 1 delta
    assert [e["token_id"] for e in toks] == list(SPELL.encode())
    assert done["finish_reason"] == "eot"
    toks, done = stream(client, {"model": "speller", "prompt": "", "stop": ["!Q"]})
    assert [e["text"] for e in toks] == ["H", "i", " ", "", "é", "", "!X", "Y"]
    toks, done = stream(client, {"model": "speller", "prompt": "", "stop": ["X"]})
    assert "".join(e["text"] for e in toks) == "Hi é!" and done["finish_reason"] == "stop"
    # ending inside a character: the partial byte arrives as U+FFFD in a last event without a token
    toks, done = stream(client, {"model": "speller", "prompt": "", "max_new_tokens": 4})
    assert toks[-1] == {"text": "\ufffd", "token_id": None, "logprob": None, "top": []}
    assert done == {**done, "finish_reason": "length", "tokens": 4}


def test_logprobs_are_the_models_distribution(client, ckpts):
    _, tok, models = ckpts
    toks, _ = stream(client, {"model": "random", "prompt": "ab", "max_new_tokens": 5, "logprobs": 4})
    ids = [e["token_id"] for e in toks]
    with torch.no_grad():
        prompt = [tok.eot_id, *b"ab"]
        lp = torch.log_softmax(
            models["random"](torch.tensor([prompt + ids]))[0, len(prompt) - 1 : -1], dim=-1
        )
    for i, e in enumerate(toks):
        assert e["logprob"] == pytest.approx(lp[i, e["token_id"]].item(), abs=1e-3)
        assert len(e["top"]) == 4 and [t["logprob"] for t in e["top"]] == sorted(
            (t["logprob"] for t in e["top"]), reverse=True
        )
        assert e["top"][0]["token_id"] == int(lp[i].argmax())  # greedy: the top alternative is the token
    toks, _ = stream(client, {"model": "random", "prompt": "ab", "max_new_tokens": 2})
    assert all(e["top"] == [] for e in toks)


def test_chat_messages_use_the_chat_format(client, ckpts):
    _, tok, _ = ckpts
    from tokenizer.chat import render_for_completion

    msgs = [{"role": "user", "content": "hi <|end|>"}]
    toks, done = stream(client, {"model": "chat", "messages": msgs})
    assert "".join(e["text"] for e in toks) == REPLY and done["finish_reason"] == "eot"
    assert done["prompt_tokens"] == len(render_for_completion(tok, msgs))
    r = client.post("/api/tokenize", json={"model": "chat", "messages": msgs}).json()
    assert [t["id"] for t in r["tokens"]] == render_for_completion(tok, msgs)


def test_special_token_text_from_a_request_stays_text(client, ckpts):
    _, tok, _ = ckpts
    # winnow generate would encode this prompt as the <|assistant|> control token and the chat model
    # would answer; typed into the playground it is 13 plain bytes and the reply never starts
    toks, done = stream(client, {"model": "chat", "prompt": "<|assistant|>", "max_new_tokens": 5})
    assert done["prompt_tokens"] == 1 + len("<|assistant|>")
    assert "".join(e["text"] for e in toks) != REPLY
    r = client.post("/api/tokenize", json={"model": "chat", "text": "a<|endoftext|>"}).json()
    assert [t["id"] for t in r["tokens"]] == list(b"a<|endoftext|>")
    assert tok.eot_id not in [t["id"] for t in r["tokens"]]


def test_next_token_view_shows_what_temperature_and_top_k_top_p_do(client, ckpts):
    _, tok, models = ckpts
    toks, _ = stream(client, {"model": "random", "prompt": "ab", "max_new_tokens": 6})
    gen = [e["token_id"] for e in toks]
    for pos in (0, 3):
        r = client.post(
            "/api/next_token", json={"model": "random", "prompt": "ab", "generated": gen[:pos], "k": 10}
        )
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["position"] == pos and d["tokens"][0]["token_id"] == gen[pos]  # greedy took the top one
        assert d["kept"] == tok.vocab_size and all(t["kept"] for t in d["tokens"])
        with torch.no_grad():
            seq = torch.tensor([[tok.eot_id, *b"ab", *gen[:pos]]])
            p = models["random"](seq)[0, -1].softmax(-1)
        assert [t["p_model"] for t in d["tokens"]] == pytest.approx(p.topk(10).values.tolist(), abs=1e-5)
    body = {"model": "random", "prompt": "ab", "strategy": "top_k", "top_k": 5, "temperature": 2.0, "k": 12}
    d = client.post("/api/next_token", json=body).json()
    rows = d["tokens"]
    assert d["kept"] == 5 and [t["kept"] for t in rows] == [True] * 5 + [False] * 7
    assert sum(t["p_final"] for t in rows[:5]) == pytest.approx(1.0, abs=1e-4)
    assert all(t["p_final"] == 0 for t in rows[5:])
    assert rows[0]["p_temperature"] < rows[0]["p_model"]  # a higher temperature flattens the top
    d = client.post(
        "/api/next_token", json={**body, "strategy": "top_p", "top_k": None, "top_p": 0.05}
    ).json()
    assert d["kept"] >= 1 and d["kept_model_mass"] > 0
    for bad, field in (
        ({"generated": [10**6]}, "generated"),
        ({"generated": "x"}, "generated"),
        ({"k": 0}, "k"),
        ({"seed": 1}, "seed"),
        ({"model": "../random"}, "model"),
    ):
        r = client.post("/api/next_token", json={"model": "random", "prompt": "ab", **bad})
        assert r.status_code in (400, 404) and r.json()["field"] == field, r.text


# --- a real server: the concurrency bound and disconnects ---------------------------------------


def test_a_training_folder_serves_its_newest_checkpoint(ckpts, tmp_path):
    """A folder that a running trainer writes into: once a newer step is saved, /api/models shows it
    and the next generation uses its weights (the old step's loaded weights are dropped)."""
    _, tok, _ = ckpts
    run = tmp_path / "training"
    other = "Bye?"
    first = bigram_gpt(chain_table(tok.vocab_size, [tok.eot_id, *SPELL.encode(), tok.eot_id]))
    second = bigram_gpt(chain_table(tok.vocab_size, [tok.eot_id, *other.encode(), tok.eot_id]))
    save_checkpoint(run, 1, first, tokenizer_dir=tok.path, meta={"kind": "sft"}, trainer_state=None)
    c = TestClient(create_app(Playground([run])))
    body = {"model": "training", "prompt": "", "strategy": "greedy", "max_new_tokens": 20}
    assert [m["step"] for m in c.get("/api/models").json()] == [1]
    assert "".join(e.get("text", "") for e in events(c.post("/api/generate", json=body).text)) == SPELL
    save_checkpoint(run, 2, second, tokenizer_dir=tok.path, meta={"kind": "sft"}, trainer_state=None)
    (m,) = c.get("/api/models").json()
    assert m["step"] == 2 and m["loaded"] is False  # step 1's weights were let go
    assert "".join(e.get("text", "") for e in events(c.post("/api/generate", json=body).text)) == other


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(pg: Playground):
    """``pg`` behind a real uvicorn on 127.0.0.1 (a free port), in a thread; yields its URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pg), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


@pytest.fixture
def served(ckpts, monkeypatch):
    """A Playground (max_concurrent=1) behind uvicorn; each forward takes >= 20 ms so a generation
    is still running when the test acts."""
    dirs, _, _ = ckpts
    real = pgmod._Recorder.__call__

    def slow(self, *a, **kw):
        time.sleep(0.02)
        return real(self, *a, **kw)

    monkeypatch.setattr(pgmod._Recorder, "__call__", slow)
    pg = Playground([dirs["random"]], max_concurrent=1)
    with serve(pg) as url:
        yield pg, url


def _wait(cond, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline
        time.sleep(0.02)


def test_over_the_concurrency_bound_is_429(served):
    pg, url = served
    body = {"model": "random", "prompt": "a", "max_new_tokens": 60}
    with httpx.Client(timeout=30) as c, c.stream("POST", f"{url}/api/generate", json=body) as first:
        lines = first.iter_lines()
        assert next(lines).startswith("data: ")  # the first generation is running
        second = c.post(f"{url}/api/generate", json=body)
        assert second.status_code == 429 and "busy" in second.json()["error"]
        assert second.headers["retry-after"] == "1"
        rest = [json.loads(x[6:]) for x in lines if x.startswith("data: ")]
        assert rest[-1]["done"] and rest[-1]["finish_reason"] == "length"
    _wait(lambda: pg.active == 0)
    r = httpx.post(f"{url}/api/generate", json={**body, "max_new_tokens": 3}, timeout=30)
    assert r.status_code == 200 and events(r.text)[-1]["tokens"] == 3  # the slot was released


def test_a_client_that_disconnects_stops_its_generation(served):
    pg, url = served
    body = {"model": "random", "prompt": "a", "max_new_tokens": 200}
    with httpx.Client(timeout=30) as c, c.stream("POST", f"{url}/api/generate", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        # leaving the block closes the connection mid-stream
    _wait(lambda: len(pg.recent) == 1 and pg.active == 0)
    rec = pg.recent[-1]
    assert rec["finish_reason"] == "cancelled" and rec["tokens"] < 100, rec


def test_generation_runs_off_the_event_loop(served):
    pg, url = served
    body = {"model": "random", "prompt": "a", "max_new_tokens": 150}
    with httpx.Client(timeout=30) as c, c.stream("POST", f"{url}/api/generate", json=body) as r:
        next(r.iter_lines())
        t0 = time.perf_counter()
        assert c.get(f"{url}/api/models").status_code == 200
        assert time.perf_counter() - t0 < 1.0  # answered while ~3 s of generation is running
        assert pg.active == 1


def test_winnow_playground_serves_on_127_0_0_1(ckpts):
    import psutil

    dirs, _, _ = ckpts
    port = _free_port()
    argv = [sys.executable, "-m", "pipeline.cli", "playground", "--checkpoint", str(dirs["speller"])]
    proc = subprocess.Popen([*argv, "--port", str(port), "--device", "cpu"], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.time() < deadline, "winnow playground did not start"
                time.sleep(0.2)
        assert [m["id"] for m in r.json()] == ["speller"]
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == "LISTEN"]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
        toks = events(
            httpx.post(f"http://127.0.0.1:{port}/api/generate", json={"model": "speller", "prompt": ""}).text
        )
        assert "".join(e.get("text", "") for e in toks) == SPELL
    finally:
        proc.terminate()
        proc.wait(20)
        proc.stderr.close()


def test_cli_parser():
    from pipeline.cli import _parser

    args = _parser().parse_args(["playground", "--checkpoint", "a", "--checkpoint", "b"])
    assert (args.checkpoint, args.host, args.port, args.max_concurrent) == (["a", "b"], "127.0.0.1", 8000, 2)


def test_the_page_is_served_with_a_same_origin_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert "winnow playground" in r.text


# --- the page in headless Chromium ----------------------------------------------------------------

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _api_text(url: str, body: dict) -> tuple[str, list[int]]:
    r = httpx.post(f"{url}/api/generate", json=body, timeout=60)
    evs = events(r.text)[:-1]
    return "".join(e["text"] for e in evs), [e["token_id"] for e in evs if e["token_id"] is not None]


def test_the_page_in_chromium(ckpts):
    dirs, tok, models = ckpts
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make install` installs it (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    pg = Playground([dirs["random"], dirs["speller"], dirs["chat"]])
    with serve(pg) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            console, requests, errors = [], [], []
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            page.wait_for_selector("#model option[value=random]", state="attached")

            def run(expect_status: str = "tokens/s") -> None:
                page.click("#generate")
                page.wait_for_function(
                    "s => document.getElementById('status').textContent.includes(s)", arg=expect_status
                )

            # 1-3: completion, greedy: the streamed text is the API's and winnow generate's
            page.select_option("#model", "random")
            assert "base" in page.inner_text("#model-info")
            page.fill("#prompt", "The river")
            page.select_option("#strategy", "greedy")
            assert page.is_disabled("#temperature") and page.is_disabled("#num_beams")
            page.fill("#max_new_tokens", "20")
            run()
            shown = page.eval_on_selector("#generated", "e => e.textContent")
            ids = page.eval_on_selector_all(
                "#generated .tok[data-id]", "es => es.map(e => Number(e.dataset.id))"
            )
            body = {"model": "random", "prompt": "The river", "max_new_tokens": 20, "logprobs": 5}
            assert (shown, ids) == _api_text(url, body)
            want = generate(models["random"], tok, "The river", GenerationConfig(max_new_tokens=20))[0]
            assert (shown, ids) == (want.text, want.token_ids)
            # 4: the prompt's token view has the tokenizer's ids
            page.wait_for_selector("#prompt-tokens .pt")
            pids = page.eval_on_selector_all("#prompt-tokens .pt", "es => es.map(e => Number(e.dataset.id))")
            assert pids == tok.encode_ordinary("The river")
            # the next-token view at the third output token: greedy took the model's top token
            page.click("#generated .tok[data-id]:nth-child(3)")
            page.wait_for_selector("#next-view table")
            first = page.eval_on_selector("#next-view tr:nth-child(2) td:nth-child(2)", "e => e.textContent")
            assert int(first) == ids[2]
            # top-k 5 in the sidebar: the view now shows 15 of its 20 tokens cut away
            page.select_option("#strategy", "top_k")
            page.fill("#top_k", "5")
            page.dispatch_event("#top_k", "change")
            page.wait_for_function("() => document.querySelectorAll('#next-view tr.cut').length === 15")
            page.screenshot(path=str(ARTIFACTS / "playground-next-token.png"), full_page=True)
            page.fill("#top_k", "")
            # seeded top-p sampling
            page.select_option("#strategy", "top_p")
            assert page.is_enabled("#temperature") and page.is_disabled("#num_beams")
            page.fill("#seed", "7")
            page.fill("#temperature", "0.9")
            run()
            shown = page.eval_on_selector("#generated", "e => e.textContent")
            body = {**body, "strategy": "top_p", "seed": 7, "temperature": 0.9}
            assert shown == _api_text(url, body)[0]
            cfg = GenerationConfig(strategy="top_p", seed=7, temperature=0.9, max_new_tokens=20)
            assert shown == generate(models["random"], tok, "The river", cfg)[0].text
            page.hover("#generated .tok[data-id]:not(:empty)")
            assert "id " in page.inner_text("#tip")
            page.screenshot(path=str(ARTIFACTS / "playground-completion.png"), full_page=True)
            # a chat turn keeps its history
            page.select_option("#model", "chat")
            page.click("#tab-chat")
            page.select_option("#strategy", "greedy")
            page.fill("#chat-input", "hi <|end|>")
            run()
            page.wait_for_selector("#history .msg.assistant")
            msgs = page.eval_on_selector_all("#history .msg", "es => es.map(e => e.lastChild.textContent)")
            assert msgs == ["hi <|end|>", REPLY]
            # regenerate replaces the last reply; edit takes the conversation back to a user message
            page.click("#history .msg.assistant button.regen")
            page.wait_for_function(
                "() => document.querySelectorAll('#history .msg').length === 2 "
                "&& document.getElementById('status').textContent.includes('tokens/s')"
            )
            msgs = page.eval_on_selector_all("#history .msg", "es => es.map(e => e.lastChild.textContent)")
            assert msgs == ["hi <|end|>", REPLY]
            page.screenshot(path=str(ARTIFACTS / "playground-chat.png"), full_page=True)
            page.click("#history .msg.user button.edit")
            assert page.eval_on_selector_all("#history .msg", "es => es.length") == 0
            assert page.input_value("#chat-input") == "hi <|end|>"
            # compare: greedy from the random model (A) against seeded top-k from it (B)
            page.click("#tab-compare")
            page.select_option("#model", "random")
            page.fill("#prompt", "The river")
            page.fill("#max_new_tokens", "15")
            page.select_option("#model-b", "random")
            page.select_option("#strategy-b", "top_k")
            assert page.is_disabled("#num_beams-b") and page.is_enabled("#seed-b")
            page.fill("#top_k-b", "5")
            page.fill("#seed-b", "3")
            page.click("#generate")
            page.wait_for_function(
                "() => ['a', 'b'].every(c => "
                "document.getElementById('status-' + c).textContent.includes('tokens/s'))"
            )
            base = {"model": "random", "prompt": "The river", "max_new_tokens": 15}
            assert page.eval_on_selector("#out-a", "e => e.textContent") == _api_text(url, base)[0]
            b_body = {**base, "strategy": "top_k", "top_k": 5, "seed": 3}
            assert page.eval_on_selector("#out-b", "e => e.textContent") == _api_text(url, b_body)[0]
            assert "15 tokens" in page.inner_text("#status-a") and "15 tokens" in page.inner_text("#status-b")
            page.screenshot(path=str(ARTIFACTS / "playground-compare.png"), full_page=True)
            assert not [m for m in console if m[0] == "error"], console
            # a bad setting: the server's error is shown (Chromium logs the 400 response itself)
            page.click("#tab-completion")
            page.fill("#max_new_tokens", "99999")
            page.click("#generate")
            page.wait_for_function(
                "() => document.getElementById('error').textContent.includes('max_new_tokens')"
            )
            assert not errors, errors
            assert [m for m in console if m[0] == "error"] == [
                ("error", "Failed to load resource: the server responded with a status of 400 (Bad Request)")
            ], console
            assert requests and all(r.startswith(url + "/") for r in requests), requests
        finally:
            browser.close()


def test_page_stop_button_and_an_unavailable_model(ckpts, tmp_path, monkeypatch):
    """Stop aborts the request and the server cancels that generation; a missing checkpoint is
    shown with its error and does not break the page."""
    dirs, _, _ = ckpts
    from playwright.sync_api import sync_playwright

    real = pgmod._Recorder.__call__

    def slow(self, *a, **kw):
        time.sleep(0.05)
        return real(self, *a, **kw)

    monkeypatch.setattr(pgmod._Recorder, "__call__", slow)
    pg = Playground([dirs["random"], tmp_path / "gone"])
    with serve(pg) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            page.wait_for_selector("#model option[value=gone]", state="attached")
            page.fill("#prompt", "a")
            page.fill("#max_new_tokens", "200")
            page.click("#generate")
            page.wait_for_function("() => document.querySelectorAll('#generated .tok').length >= 3")
            page.click("#stop-btn")
            page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('stopped')"
            )
            _wait(lambda: len(pg.recent) == 1)
            assert pg.recent[-1]["finish_reason"] == "cancelled" and pg.recent[-1]["tokens"] < 150
            assert page.is_enabled("#generate")
            page.select_option("#model", "gone")
            assert "does not exist" in page.inner_text("#model-info")
            page.click("#generate")
            page.wait_for_function(
                "() => document.getElementById('error').textContent.includes('does not exist')"
            )
            page.select_option("#model", "random")
            page.fill("#max_new_tokens", "3")
            page.click("#generate")
            page.wait_for_function("() => document.getElementById('status').textContent.includes('3 tokens')")
            assert not errors, errors
        finally:
            browser.close()
