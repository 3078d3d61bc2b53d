# Issue 37, item 4: whole AL runs (3 cycles) on the grid's worst cell after the change (20
# labels in a 200-image pool, +20 per cycle: 20 -> 60 labeled), the configs/cifar10_cpu.py
# recipe, seeds 0-2: DISAL (defaults), Random, and the control (Random's picks, DISAL's
# training). At 2-6 labels per class every DISAL selection is a cold start (Random's rows), so
# DISAL and the control label the same rows; the AULC difference to Random is the dynamic
# loss's. Run from the repository root; resumes. Table: <workdir>/ablation.md.
WORKDIR=${1:-workdirs/disal_whole_l20_r10}
CELL=al.initial_count=20,al.step_count=20,al.final_count=60,data.max_train=220
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir="$WORKDIR" \
  --seeds=0,1,2 --config.full_training=False --baseline=random \
  --variant=random:strategies=random,$CELL \
  --variant=disal:strategies=disal,$CELL \
  --variant=random_dynamic:strategies=random_dynamic,$CELL
