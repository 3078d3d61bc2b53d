# Issue 40, item 3: bfloat16 compute against float32 at the offline default's first budget
# (digits, 130 labels, one cycle), DISAL and Random, seeds 0-2, on CPU.
# Run from the repository root; resumes. Table: <workdir>/ablation.md.
WORKDIR=${1:-workdirs/bf16_digits}
ONE=al.final_fraction=0.1
python -m disal_jax.ablation --config=configs/default.py --workdir="$WORKDIR" \
  --seeds=0,1,2 --config.full_training=False --baseline=random_f32 \
  --variant=random_f32:strategies=random,$ONE \
  --variant=random_bf16:strategies=random,model.dtype=bfloat16,$ONE \
  --variant=disal_f32:strategies=disal,$ONE \
  --variant=disal_bf16:strategies=disal,model.dtype=bfloat16,$ONE
