# Issue 37: the grid's cells whose cycle draws each pool row under twice (40 labels in 8,000:
# 1.2 draws, the scenario; 100 in 5,000: 1.92; 100 in 20,000: 0.48), with DISAL's new
# defaults: disal.guard_min_pool_draws=2 trains them without the dynamic loss, so their first
# budget must equal Random's (before_runs.csv) exactly. The other cells train as before.
#   bash results/disal_budget_grid/after_gated.sh [workdir]
#   python results/disal_budget_grid/table.py <workdir> results/disal_budget_grid/before_runs.csv
WORKDIR=${1:-workdirs/disal_budget_grid_after}
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir="$WORKDIR" \
  --seeds=0,1,2 --config.full_training=False \
  --variant=l40_r200_disal:strategies=disal,al.initial_count=40,al.step_count=40,al.final_count=40,data.max_train=8040 \
  --variant=l100_r50_disal:strategies=disal,al.initial_count=100,al.step_count=100,al.final_count=100,data.max_train=5100 \
  --variant=l100_r200_disal:strategies=disal,al.initial_count=100,al.step_count=100,al.final_count=100,data.max_train=20100
