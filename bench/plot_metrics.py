"""Plot a training run's ``metrics.jsonl`` (train/val loss against tokens) to a PNG.

    .venv/bin/python bench/plot_metrics.py RUN_OUT/metrics.jsonl -o docs/loss_curve.png

Needs matplotlib (``pip install -e ".[bench]"``).  Resumed runs may repeat a step after a crash
between checkpoint and metrics write; the last line for a step wins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(path: Path) -> list[dict]:
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step.setdefault(row["step"], {}).update(row)
    return [by_step[s] for s in sorted(by_step)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/loss_curve.png"))
    ap.add_argument("--title", default=None)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(args.metrics)
    train = [(r["tokens"] / 1e6, r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    val = [(r["tokens"] / 1e6, r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss", markersize=3)
    ax.set_xlabel("tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(args.title or str(args.metrics.parent.name))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
