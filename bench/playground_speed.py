"""Playground speed: time to first token and tokens/s through ``winnow playground``'s HTTP API,
against ``winnow generate`` on the same model and settings, with 1 client and with 4 at once.

    .venv/bin/python bench/playground_speed.py --checkpoint runs/speedrun/base   # ~3 min on 2 cores

Three ways to get the same greedy completion (same prompt, same ids: the playground runs
``train.generate.sample_steps`` like the CLI, tests/test_playground.py):

* ``api``: ``POST /api/generate`` to a ``winnow playground`` started here as a subprocess on
  127.0.0.1 and a free port (killed by its PID at the end), model already loaded (one warm-up
  request): what a user of the page waits for.  TTFT = request sent → first token event.
* ``cli``: ``winnow generate`` as a subprocess, streaming to a pipe: TTFT = spawn → first byte of
  the completion, so it includes interpreter start, imports and loading the checkpoint (a cold
  start: what a user of the command waits for every time).
* ``inproc``: ``train.generate.stream`` in this process on a loaded model: the CLI's engine without
  its start-up, the floor the server's overhead (HTTP, SSE, a thread per request) is measured from.

tokens/s is the decode rate after the first token: (tokens − 1) / (last token − first token), read
from the arrival times at the client.  With ``--clients 4`` the clients start together; the server
runs ``--max-concurrent`` generations at once (default of ``winnow playground``: 2) and answers the
rest HTTP 429, so the 4-client API run is done twice: with the server's bound raised to 4, and at
the default bound 2, counting the 429s (a client retries after 0.2 s until served, as the page's
user would retry).  Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchutil import busy_cpu_s  # noqa: E402
from scripts.speedrun import WINNOW  # noqa: E402
from train.checkpoint import load_model  # noqa: E402
from train.generate import GenerationConfig, stream  # noqa: E402

PROMPT = "The history of the city"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rates(t0: float, arrivals: list[float]) -> dict:
    """TTFT and the decode rate after the first token, from token arrival times."""
    n = len(arrivals)
    tps = (n - 1) / (arrivals[-1] - arrivals[0]) if n > 1 and arrivals[-1] > arrivals[0] else None
    return {
        "ttft_s": arrivals[0] - t0 if n else None,
        "tokens": n,
        "tokens_per_s": tps,
        "total_s": (arrivals[-1] - t0) if n else None,
    }


def api_once(port: int, model_id: str, max_new: int) -> dict:
    """One streamed request; retries on 429 (counted)."""
    body = json.dumps({"model": model_id, "prompt": PROMPT, "strategy": "greedy", "max_new_tokens": max_new})
    rejected = 0
    t0 = time.perf_counter()
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("POST", "/api/generate", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status == 429:
            resp.read()
            conn.close()
            rejected += 1
            time.sleep(0.2)
            continue
        if resp.status != 200:
            raise RuntimeError(f"/api/generate: HTTP {resp.status}: {resp.read()[:300]!r}")
        break
    arrivals, done = [], {}
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if event.get("done"):
            done = event
            break
        if event.get("token_id") is not None:
            arrivals.append(time.perf_counter())
    conn.close()
    return {**rates(t0, arrivals), "rejected_429": rejected, "finish_reason": done.get("finish_reason")}


def cli_once(checkpoint: str, max_new: int, tokens: int) -> dict:
    """``winnow generate`` streaming one prompt to a pipe.  A pipe read may merge several token
    deltas under load, so the token count is taken from the in-process run (the same greedy ids)
    and the decode rate from the first and last chunk's arrival."""
    cmd = [
        WINNOW,
        "generate",
        "--checkpoint",
        checkpoint,
        "--prompt",
        PROMPT,
        "--strategy",
        "greedy",
        "--max-new-tokens",
        str(max_new),
        "--device",
        "cpu",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    echo, seen, arrivals = len(PROMPT.encode()), 0, []
    fd = proc.stdout.fileno()
    while chunk := os.read(fd, 65536):
        now = time.perf_counter()
        seen += len(chunk)
        if seen > echo and chunk != b"\n":  # after the prompt's echo; the final newline is no token
            arrivals.append(now)
    proc.stdout.close()
    proc.wait()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}")
    out = rates(t0, arrivals)
    if len(arrivals) > 1:
        out["tokens_per_s"] = (tokens - 1) / (arrivals[-1] - arrivals[0])
    out["tokens"], out["chunks"] = tokens, len(arrivals)
    return out


def inproc_once(model, tok, max_new: int) -> dict:
    cfg = GenerationConfig(strategy="greedy", max_new_tokens=max_new)
    t0, arrivals = time.perf_counter(), []
    for _ in stream(model, tok, PROMPT, cfg):
        arrivals.append(time.perf_counter())
    return rates(t0, arrivals)


def concurrently(fn, n: int) -> list[dict]:
    """``n`` calls of ``fn`` started together; each result gets ``aggregate_tokens_per_s``: all
    clients' tokens ÷ the round's wall time (what the machine delivers, not what one client sees)."""
    results: list = [None] * n
    barrier = threading.Barrier(n + 1)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    agg = sum(r["tokens"] for r in results) / (time.perf_counter() - t0)
    return [{**r, "aggregate_tokens_per_s": agg} for r in results]


def start_server(checkpoint: str, max_concurrent: int) -> tuple[subprocess.Popen, int, str]:
    port = free_port()
    cmd = [
        WINNOW,
        "playground",
        "--checkpoint",
        checkpoint,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-concurrent",
        str(max_concurrent),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/models")
            models = json.loads(conn.getresponse().read())
            conn.close()
            return proc, port, models[0]["id"]
        except (OSError, ValueError):
            if proc.poll() is not None:
                raise RuntimeError(f"winnow playground exited {proc.returncode}") from None
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError("winnow playground did not answer within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()  # our own child, by its PID
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def median_of(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 4) if vals else None


def summarize(runs: list[dict]) -> dict:
    out = {k: median_of(runs, k) for k in ("ttft_s", "tokens_per_s", "total_s", "aggregate_tokens_per_s")}
    out["tokens"] = median_of(runs, "tokens")
    out["runs"] = len(runs)
    if any("rejected_429" in r for r in runs):
        out["rejected_429_total"] = sum(r.get("rejected_429", 0) for r in runs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/speedrun/base")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--results", default="bench/results/playground_speed.json")
    args = ap.parse_args(argv)
    ckpt, n, k = str((ROOT / args.checkpoint).resolve()), args.max_new_tokens, args.clients
    res: dict = {
        "checkpoint": args.checkpoint,
        "prompt": PROMPT,
        "max_new_tokens": n,
        "strategy": "greedy",
        "repeats": args.repeats,
        "clients": k,
        "torch_threads": torch.get_num_threads(),
    }
    busy0, t0 = busy_cpu_s(), time.perf_counter()

    model, tok = load_model(ckpt, "cpu")
    inproc_once(model, tok, n)  # warm-up
    res["inproc_1"] = summarize([inproc_once(model, tok, n) for _ in range(args.repeats)])
    del model

    tokens = int(res["inproc_1"]["tokens"])
    res["cli_1"] = summarize([cli_once(ckpt, n, tokens) for _ in range(args.repeats)])
    res[f"cli_{k}"] = summarize(
        [r for _ in range(args.repeats) for r in concurrently(lambda: cli_once(ckpt, n, tokens), k)]
    )

    for bound in (k, 2):
        proc, port, mid = start_server(ckpt, bound)
        try:
            api_once(port, mid, n)  # warm-up: loads the model
            if bound == k:
                res["api_1"] = summarize([api_once(port, mid, n) for _ in range(args.repeats)])
            runs = [
                r
                for _ in range(args.repeats)
                for r in concurrently(lambda p=port, m=mid: api_once(p, m, n), k)
            ]
            res[f"api_{k}_bound{bound}"] = summarize(runs)
        finally:
            stop_server(proc)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["machine_busy_cpu_s"] = round(busy_cpu_s() - busy0, 1)  # all processes: > wall × ~1 means load
    Path(ROOT / args.results).write_text(json.dumps(res, indent=1) + "\n")
    print(f"{'mode':<18} {'TTFT s':>8} {'tokens/s':>9} {'all clients tok/s':>18} {'tokens':>7} {'429s':>5}")
    for key, v in res.items():
        if isinstance(v, dict):
            print(
                f"{key:<18} {v['ttft_s'] or 0:>8.3f} {v['tokens_per_s'] or 0:>9.1f} "
                f"{v.get('aggregate_tokens_per_s') or 0:>18.1f} {v['tokens'] or 0:>7.0f} "
                f"{v.get('rejected_429_total', ''):>5}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
