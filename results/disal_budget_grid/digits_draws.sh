# Issue 37 on digits: does a pool drawn fewer than twice per cycle (the train-branch target
# counts from a row's second draw, so late in the cycle) cost DISAL's first budget on a set
# where the model improves a lot within the cycle? 20 labels (2 per class), one cycle, the
# offline default's recipe (600 steps); the pool draws per row set by disal.dynamic_batch_size:
# 3 -> 1.4 draws, 6 -> 2.8, 32 (the default) -> 15. 3 seeds. Run from the repository root;
# resumes. Table: workdirs/disal_digits_draws/ablation.md.
COUNTS=al.initial_count=20,al.step_count=20,al.final_count=20
python -m disal_jax.ablation --config=configs/default.py --workdir=workdirs/disal_digits_draws \
  --seeds=0,1,2 --config.full_training=False --baseline=random \
  --variant=random:strategies=random,$COUNTS \
  --variant=disal_b3:strategies=disal,disal.dynamic_batch_size=3,$COUNTS \
  --variant=disal_b6:strategies=disal,disal.dynamic_batch_size=6,$COUNTS \
  --variant=disal_b32:strategies=disal,$COUNTS
