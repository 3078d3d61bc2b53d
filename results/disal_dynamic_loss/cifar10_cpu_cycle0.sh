# The first budget of configs/cifar10_cpu.py (300 labeled CIFAR-10 images, width 8, 300 SGD
# steps, 2,000 validation images), where DISAL and Random train on the same labels. Run from
# the repository root. disal: the defaults of 2026-12-02 (train branch, MSE, EMA 0.6, ramp-up,
# lambda 10, pool batch 32); disal_before: the first design as cifar10_cpu ran it.
# Measured 2026-12-02 with other jobs on the machine (train seconds are not comparable);
# disal_lam3 and disal_before have seeds 0-1 only (stopped for time).
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir=workdirs/ablation_cifar10_cpu_cycle0 \
 --seeds=0,1,2 --config.full_training=False --config.al.final_fraction=0.1 \
 --variant=random:strategies=random \
 --variant=disal:strategies=disal,disal.target_source=train_branch,disal.dynamic_loss=mse,record.weighting=ema,record.ema_decay=0.6,disal.weight_schedule=rampup,disal.dynamic_weight=10.0,disal.dynamic_batch_size=32,disal.branch_start_fraction=0.0 \
 --variant=disal_lam3:strategies=disal,disal.target_source=train_branch,disal.dynamic_loss=mse,record.weighting=ema,record.ema_decay=0.6,disal.weight_schedule=rampup,disal.dynamic_weight=3.0,disal.dynamic_batch_size=32,disal.branch_start_fraction=0.0 \
 --variant=disal_before:strategies=disal,disal.target_source=eval_pass,disal.dynamic_loss=ce,record.weighting=mean,disal.weight_schedule=constant,disal.dynamic_weight=1.0,disal.dynamic_warmup_epochs=5,disal.dynamic_batch_size=128,disal.branch_start_fraction=0.0
# Second sitting (2026-12-02, other jobs on the machine): the branch's start and the joint
# branch, same budget and seeds (results in cifar10_cpu_cycle0.md, second table).
DISAL=strategies=disal,disal.target_source=train_branch,disal.dynamic_loss=mse,record.weighting=ema,record.ema_decay=0.6,disal.weight_schedule=rampup,disal.dynamic_weight=10.0,disal.dynamic_batch_size=32
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir=workdirs/ablation_cifar10_cpu_cycle0 \
 --seeds=0,1,2 --config.full_training=False --config.al.final_fraction=0.1 \
 --variant=disal_joint:$DISAL,disal.branch_start_fraction=0.0,disal.branch=joint \
 --variant=start50_ramp25:$DISAL,disal.branch_start_fraction=0.5,disal.rampup_fraction=0.25 \
 --variant=start50_ramp50:$DISAL,disal.branch_start_fraction=0.5,disal.rampup_fraction=0.5 \
 --variant=start33_ramp33:$DISAL,disal.branch_start_fraction=0.33,disal.rampup_fraction=0.33
