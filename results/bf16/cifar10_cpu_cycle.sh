# Issue 40, item 3: bfloat16 compute against float32 on one cifar10_cpu cycle (the real
# CIFAR-10 JPEGs, 300 labels, 300 SGD steps, ResNet-18 width 8), DISAL and Random, seeds 0-2,
# on CPU. Needs the shared archive (see configs/cifar10_cpu.py). Run from the repository root;
# resumes. Table: <workdir>/ablation.md; per-run rows:
#   python results/disal_dynamic_loss/runs_csv.py <workdir> > results/bf16/cifar10_cpu_cycle_runs.csv
WORKDIR=${1:-workdirs/bf16_cifar10_cpu}
ONE=al.final_fraction=0.1
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir="$WORKDIR" \
  --seeds=0,1,2 --config.full_training=False --baseline=random_f32 \
  --variant=random_f32:strategies=random,$ONE \
  --variant=random_bf16:strategies=random,model.dtype=bfloat16,$ONE \
  --variant=disal_f32:strategies=disal,$ONE \
  --variant=disal_bf16:strategies=disal,model.dtype=bfloat16,$ONE
