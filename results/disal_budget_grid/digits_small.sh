# Issue 37 on digits (the offline default's recipe): 20 labels (2 per class) then +20 to 60,
# 3 seeds. At the first budget DISAL and Random train on the same labels; from the second
# on, random_dynamic (Random's picks, DISAL's training) splits DISAL's result into its
# training and its selection; disal_balanced is DISAL with a class-balanced top-K.
# Run from the repository root; resumes. Table: workdirs/disal_digits_small/ablation.md.
COUNTS=al.initial_count=20,al.step_count=20,al.final_count=60
python -m disal_jax.ablation --config=configs/default.py --workdir=workdirs/disal_digits_small \
  --seeds=0,1,2 --config.full_training=False --baseline=random \
  --variant=random:strategies=random,$COUNTS \
  --variant=random_dynamic:strategies=random_dynamic,$COUNTS \
  --variant=disal:strategies=disal,$COUNTS \
  --variant=disal_balanced:strategies=disal,disal.selection=class_balanced,$COUNTS
