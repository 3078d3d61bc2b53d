# Issue 37's candidate designs on the grid's worst cell of seed 0 (40 labels in an 8,000-image
# pool, each pool row drawn 1.2 times a cycle), configs/cifar10_cpu.py recipe, first budget
# only. Random reruns on this code (its runs in the grid are of 0c35bad); the candidates:
# disal.target_max_age=0.25 (a train-branch target folded more than a quarter of the cycle
# ago counts 0) and disal.target_min_confidence=0.5. Table:
# python results/disal_budget_grid/table.py workdirs/disal_budget_candidates
CELL=al.initial_count=40,al.step_count=40,al.final_count=40,data.max_train=8040
python -m disal_jax.ablation --config=configs/cifar10_cpu.py \
  --workdir=workdirs/disal_budget_candidates --seeds=0,1,2 --config.full_training=False \
  --variant=l40_r200_random:strategies=random,$CELL \
  --variant=l40_r200_age25:strategies=disal,disal.target_max_age=0.25,$CELL \
  --variant=l40_r200_conf50:strategies=disal,disal.target_min_confidence=0.5,$CELL
