# Issue 37, item 4: whole AL runs (3 cycles) on the grid's worst cell after the change (20
# labels in a 200-image pool, +20 per cycle: 20 -> 60 labeled), the configs/cifar10_cpu.py
# recipe, seeds 0-2: DISAL (defaults) and Random. At 2-6 labels per class every DISAL
# selection is a cold start (Random's rows) and every cycle draws each pool row 48+ times
# (no guard), so DISAL is the control (Random's picks, DISAL's training) run for run (same
# rows, same training; tests/test_disal_guard.py), and its AULC difference to Random is the
# dynamic loss's. Add --variant=random_dynamic:strategies=random_dynamic,$CELL to see it.
# Run from the repository root; resumes. Table: <workdir>/ablation.md.
WORKDIR=${1:-workdirs/disal_whole_l20_r10}
CELL=al.initial_count=20,al.step_count=20,al.final_count=60,data.max_train=220
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir="$WORKDIR" \
  --seeds=0,1,2 --config.full_training=False --baseline=random \
  --variant=random:strategies=random,$CELL \
  --variant=disal:strategies=disal,$CELL
