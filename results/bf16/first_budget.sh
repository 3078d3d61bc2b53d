# Issue 40, item 3: bfloat16 compute against float32 at a config's first budget (one cycle),
# DISAL and Random, seeds 0-2, on CPU. Run from the repository root; resumes.
#   bash results/bf16/first_budget.sh default workdirs/bf16_digits
#     (digits, 130 labels: digits_first_budget_runs.csv)
#   bash results/bf16/first_budget.sh cifar10_cpu workdirs/bf16_cifar10_cpu
#     (the CIFAR-10 JPEGs, 300 labels, 300 SGD steps; needs the shared archive, see
#     configs/cifar10_cpu.py: cifar10_cpu_cycle_runs.csv)
# Table: <workdir>/ablation.md; per-run rows:
#   python results/disal_dynamic_loss/runs_csv.py <workdir> > results/bf16/<name>_runs.csv
CONFIG=${1:-default}
WORKDIR=${2:-workdirs/bf16_$CONFIG}
ONE=al.final_fraction=0.1
python -m disal_jax.ablation --config=configs/$CONFIG.py --workdir="$WORKDIR" \
  --seeds=0,1,2 --config.full_training=False --baseline=random_f32 \
  --variant=random_f32:strategies=random,$ONE \
  --variant=random_bf16:strategies=random,model.dtype=bfloat16,$ONE \
  --variant=disal_f32:strategies=disal,$ONE \
  --variant=disal_bf16:strategies=disal,model.dtype=bfloat16,$ONE
