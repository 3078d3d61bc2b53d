# Issue 37's grid: DISAL's first budget against Random's (the same labels, one cycle per run)
# on the CIFAR-10 archive with the configs/cifar10_cpu.py recipe, at 2, 4 and 10 labels per
# class (al.initial_count = 20, 40, 100, drawn at random) in pools 10x, 50x and 200x the
# labeled set (data.max_train = labeled x (1 + ratio)), seeds 0-2.
#   bash results/disal_budget_grid/grid.sh [workdir] [disal keys] [runs CSV of finished runs]
# The second argument names DISAL's keys (default: the config's defaults), e.g.
# "disal.target_max_age=0.25" for a candidate design; the third skips the (cell, variant, seed)
# runs a CSV already holds (what table.py --write_csv writes). Table:
#   python results/disal_budget_grid/table.py <workdir> [<runs CSV> ...]
# The "before" grid (before_runs.csv) runs on commit 0c35bad, the defaults the issue found:
#   git worktree add ../grid_before 0c35bad && cp results/disal_budget_grid/* \
#     ../grid_before/results/disal_budget_grid/ && cd ../grid_before && \
#     bash results/disal_budget_grid/grid.sh <abs path>/workdirs/disal_budget_grid_before "" \
#       results/disal_budget_grid/before_runs.csv
# Run from the repository root. Resumes; finished runs are skipped.
set -euo pipefail
WORKDIR=${1:-workdirs/disal_budget_grid}
DISAL_KEYS=${2:-}
DONE_CSV=${3:-}
done_run() {  # variant seed: whether DONE_CSV holds that run
  [[ -n "$DONE_CSV" ]] && python - "$DONE_CSV" "$1" "$2" <<'PY'
import csv, sys
path, name, seed = sys.argv[1:]
rows = {(f"l{r['labeled']}_r{r['ratio']}_{r['variant']}", r["seed"])
        for r in csv.DictReader(open(path))}
sys.exit(0 if (name, seed) in rows else 1)
PY
}
for seed in 0 1 2; do  # seed-major: every cell gets its first seed before any its second
  VARIANTS=()
  for labeled in 20 40 100; do
    for ratio in 10 50 200; do
      cell="al.initial_count=$labeled,al.step_count=$labeled,al.final_count=$labeled,data.max_train=$((labeled * (1 + ratio)))"
      for strategy in random disal; do
        name="l${labeled}_r${ratio}_${strategy}"
        done_run "$name" "$seed" && continue
        keys="strategies=$strategy,$cell"
        [[ $strategy == disal && -n "$DISAL_KEYS" ]] && keys="$keys,$DISAL_KEYS"
        VARIANTS+=("--variant=$name:$keys")
      done
    done
  done
  if ((${#VARIANTS[@]})); then
    python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir="$WORKDIR" \
      --seeds=$seed --config.full_training=False "${VARIANTS[@]}"
  fi
done
