# Issue 37's grid: DISAL's first budget against Random's (the same labels, one cycle per run)
# on the CIFAR-10 archive with the configs/cifar10_cpu.py recipe, at 2, 4 and 10 labels per
# class (al.initial_count = 20, 40, 100, drawn at random) in pools 10x, 50x and 200x the
# labeled set (data.max_train = labeled x (1 + ratio)), seeds 0-2.
# The "before" grid (before_runs.csv) runs on commit 0c35bad, the defaults the issue found:
#   git worktree add ../grid_before 0c35bad && cp results/disal_budget_grid/grid.sh \
#     ../grid_before/results/disal_budget_grid/ && cd ../grid_before && \
#     bash results/disal_budget_grid/grid.sh <abs path>/workdirs/disal_budget_grid_before
# (a rerun resumes and skips finished runs; copy earlier runs' folders into the workdir).
# Run from the repository root: bash results/disal_budget_grid/grid.sh [workdir] [disal keys]
# The second argument names DISAL's keys (default: the config's defaults), e.g.
# "disal.target_source=eval_pass" for a candidate design; the table comes from
# `python results/disal_budget_grid/table.py <workdir>`. Resumes; finished runs are skipped.
set -euo pipefail
WORKDIR=${1:-workdirs/disal_budget_grid}
DISAL_KEYS=${2:-}
VARIANTS=()
for labeled in 20 40 100; do
  for ratio in 10 50 200; do
    cell="al.initial_count=$labeled,al.step_count=$labeled,al.final_count=$labeled,data.max_train=$((labeled * (1 + ratio)))"
    VARIANTS+=("--variant=l${labeled}_r${ratio}_random:strategies=random,$cell")
    VARIANTS+=("--variant=l${labeled}_r${ratio}_disal:strategies=disal,$cell${DISAL_KEYS:+,$DISAL_KEYS}")
  done
done
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir="$WORKDIR" \
  --seeds=0,1,2 --config.full_training=False "${VARIANTS[@]}"
