#!/usr/bin/env bash
# From a WARC to an aligned model in one command: curation -> tokenizer + shards -> pretraining
# -> SFT -> reward model -> DPO -> a table with each stage's numbers, each model's validation
# metrics and replies of the base, SFT and DPO models (scripts/speedrun.py has the details).
#   scripts/speedrun.sh                      # CPU scale (< 1 h on 2 cores), output in runs/speedrun
#   SPEEDRUN_SCALE=gpu scripts/speedrun.sh   # bigger model and longer runs for a GPU
#   scripts/speedrun.sh --depth 6 --out runs/sr6     # rerunning continues where it stopped; --fresh restarts
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/speedrun.py "$@"
