#!/usr/bin/env bash
# Measures what docs/results.md reports, by the standard of EVALUATION.md (docs/backtest.md, "Judging at
# equal cost"): every policy's gap to the staggered-periodic frontier at its own re-training count with a
# 95 % bootstrap interval over streams, the clairvoyant headroom and the labour, on
#   - the simulator, report seeds only (seeds 1 to 6 are kept for tuning and never reported here), 1,000 zones
#     each: an edge of half a point of always's MAE needs about that many streams for a per-seed interval to
#     exclude zero (at 200 zones the interval is about 1.3 points wide; docs/results.md, "Tenth pass");
#   - every bundled real report panel (`mlma datasets --use report`), ridge model.
# With USE=tuning it measures the tuning data instead (simulator seeds 1 to 6 and `mlma datasets --use tuning`),
# where settings are chosen; the two are never mixed in one run.
# Each run holds the default MLMA, its budget swept at 1 %, 3 %, 10 % and 30 % of always's re-trainings,
# ADWIN swept over delta and Page-Hinkley over threshold; the backtest adds the frontier's schedules. Fits
# are shared by all policies of a run and kept in a fit cache across runs, so a re-run only fits what is new.
#
# Usage: scripts/make_results.sh [OUT_DIR]     (default: results/, or tuning/ with USE=tuning)
# Environment: USE (report or tuning, default report), SEEDS (default "7 11 13 17", with USE=tuning
#              "1 2 3 4 5 6"; empty for none), PANELS (default: every bundled panel of USE; empty for none), SWEEPS (default: the ADWIN and Page-Hinkley sweeps below; empty for none, e.g. to
#              re-measure MLMA alone when only its code changed), ZONES, DAYS, BOOTSTRAP,
#              EXECUTOR (e.g. process:2), EXTRA_POLICIES (comma-separated specs run beside the default, e.g.
#              an earlier default: "mlma:growth=none:page_hinkley=0"), MLMA and PYTHON (default: the
#              project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
USE=${USE:-report}
case "$USE" in
  report) TUNING_SEEDS=" 1 2 3 4 5 6 "; DEFAULT_SEEDS="7 11 13 17" ;;
  tuning) TUNING_SEEDS=" 1 2 3 4 5 6 "; DEFAULT_SEEDS="1 2 3 4 5 6" ;;
  *) echo "USE must be report or tuning, not '$USE'" >&2; exit 2 ;;
esac
OUT=${1:-$([ "$USE" = tuning ] && echo tuning || echo results)}
MLMA=${MLMA:-.venv/bin/mlma}
PYTHON=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS-$DEFAULT_SEEDS}
ZONES=${ZONES:-1000}
DAYS=${DAYS:-84}
BOOTSTRAP=${BOOTSTRAP:-1000}
EXECUTOR=${EXECUTOR:-inline}
CACHE="$OUT/fit-cache"
ADWIN_SWEEP="adwin:delta=0.0001,0.002,0.01,0.1,0.5"
PH_SWEEP="page-hinkley:threshold=5,10,20,50,200"
SWEEPS=${SWEEPS-"$ADWIN_SWEEP $PH_SWEEP"}
BUDGET_SHARES="0.01 0.03 0.1 0.3"
mkdir -p "$OUT"
PANELS=${PANELS-$($MLMA datasets --use "$USE")}

# Settings are chosen on the tuning data and results reported on the rest: a run holds one kind only.
for SEED in $SEEDS; do
  case "$TUNING_SEEDS" in
    *" $SEED "*) [ "$USE" = tuning ] || { echo "seed $SEED is a tuning seed; not reported (USE=tuning)" >&2; exit 2; } ;;
    *) [ "$USE" = report ] || { echo "seed $SEED is a report seed; not used for tuning" >&2; exit 2; } ;;
  esac
done
OTHER_PANELS=" $($MLMA datasets --use "$([ "$USE" = tuning ] && echo report || echo tuning)" | tr '\n' ' ') "
for PANEL in $PANELS; do
  case "$OTHER_PANELS" in
    *" $PANEL "*) echo "panel $PANEL is not a $USE panel (mlma datasets --use $USE)" >&2; exit 2 ;;
  esac
done

# The run folders (sim-SEED-ridge) and tables.md are not named by platform size: an OUT_DIR holds one size.
PLATFORM="zones=$ZONES days=$DAYS"
if [ -n "$SEEDS" ] && [ -f "$OUT/platform.txt" ] && [ "$(cat "$OUT/platform.txt")" != "$PLATFORM" ]; then
  echo "$OUT holds results of simulated platforms of $(cat "$OUT/platform.txt"), not $PLATFORM; use another" \
       "OUT_DIR (or set ZONES and DAYS to match)" >&2
  exit 2
fi
[ -z "$SEEDS" ] || echo "$PLATFORM" > "$OUT/platform.txt"

# MLMA's budget at a share of always's re-trainings (always re-trains every stream every tick). A policy whose
# budget takes a share of the fleet per tick gets the share itself; one that takes a whole number of
# re-trainings per tick gets the share of the data's streams, at least 1.
budget_specs() {
  "$PYTHON" - "$1" $BUDGET_SHARES <<'EOF'
import sys

import pandas as pd

from mlma.mlma_policy import MLMAPolicy
from mlma.policy import parameter_types

path, shares = sys.argv[1], [float(s) for s in sys.argv[2:]]
frame = pd.read_parquet(path, columns=["unique_id"]) if path.endswith(".parquet") else pd.read_csv(path, usecols=["unique_id"])
n_streams = frame["unique_id"].nunique()
types, _ = parameter_types(MLMAPolicy)["budget"]
specs = [f"mlma:budget={share:g}" if float in types else f"mlma:budget={max(1, round(share * n_streams))}"
         for share in shares]
print(",".join(dict.fromkeys(specs)))
EOF
}

run() {  # data file, output name
  local data=$1 name=$2
  local policies
  policies="mlma,${EXTRA_POLICIES:+$EXTRA_POLICIES,}$(budget_specs "$data")"
  local sweep=()
  for grid in $SWEEPS; do sweep+=(--sweep "$grid"); done
  echo "== $name: $policies; sweeps ${SWEEPS:-none}" >&2
  $MLMA backtest --data "$data" --model ridge --policies "$policies" "${sweep[@]}" \
      --bootstrap "$BOOTSTRAP" --executor "$EXECUTOR" --fit-cache "$CACHE" --out "$OUT/$name"
}

RUNS=()
SIM_RUNS=()
for SEED in $SEEDS; do
  DATA="$OUT/platform-$SEED-${ZONES}z-${DAYS}d.parquet"  # named by its size: another ZONES never reuses it
  [ -f "$DATA" ] || $MLMA simulate --zones "$ZONES" --days "$DAYS" --seed "$SEED" --out "$DATA"
  run "$DATA" "sim-$SEED-ridge"
  RUNS+=("$OUT/sim-$SEED-ridge")
  SIM_RUNS+=("$OUT/sim-$SEED-ridge")
done
for PANEL in $PANELS; do
  DATA="$OUT/$PANEL.parquet"
  [ -f "$DATA" ] || $MLMA dataset "$PANEL" --out "$DATA"
  run "$DATA" "$PANEL-ridge"
  RUNS+=("$OUT/$PANEL-ridge")
done

{
  echo "# Gap to the staggered-periodic frontier, headroom and labour (ridge)"
  echo
  echo "Gap: MAE minus the frontier's at the policy's re-trainings, % of always's MAE, 95 % bootstrap"
  echo "interval over streams (none for panels of fewer than 10 streams). Headroom: the frontier minus the"
  echo "clairvoyant bound at that cost. Labour: escalations per 1,000 stream-days, about data and about the"
  echo "agent's own re-training; precision against the simulator's events that need a person; and the queue"
  echo "items they make (one per kind, tick and city; on the panels, per kind and tick) with their precision."
  # Several folders give the table over all runs; each run's full table follows.
  if [ "${#RUNS[@]}" -gt 1 ]; then echo; $MLMA table "${RUNS[@]}"; fi
  # The simulator's seeds as one fleet: one interval over all their streams (mlma table --pooled).
  if [ "${#SIM_RUNS[@]}" -gt 1 ]; then
    echo; echo "## The simulator seeds pooled"; echo; $MLMA table --pooled --bootstrap "$BOOTSTRAP" "${SIM_RUNS[@]}"
  fi
  for RUN in "${RUNS[@]}"; do
    echo
    echo "## $(basename "$RUN")"
    echo
    $MLMA table "$RUN"
  done
} | tee "$OUT/tables.md"
