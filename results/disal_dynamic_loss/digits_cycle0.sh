# The first budget only (130 labeled digits), where DISAL and Random train on the same labels:
# does the dynamic loss help training? Run from the repository root. Every variant names its
# keys, so the script reproduces the table whatever the defaults are.
OLD=disal.target_source=eval_pass,disal.dynamic_loss=ce,record.weighting=mean,disal.weight_schedule=constant,disal.dynamic_weight=1.0
EMA=record.weighting=ema,record.ema_decay=0.6,disal.weight_schedule=rampup
python -m disal_jax.ablation --config=configs/default.py --workdir=workdirs/ablation_digits_cycle0 \
 --seeds=0,1,2 --config.full_training=False --config.data.val_fraction=0.1 \
 --config.al.final_fraction=0.1 --config.train.min_steps=600 --config.disal.dynamic_batch_size=32 \
 --config.disal.branch_start_fraction=0.0 \
 --variant=random:strategies=random \
 --variant=lambda0:strategies=disal,$OLD,disal.dynamic_weight=0.0 \
 --variant=ce_mean_eval:strategies=disal,$OLD \
 --variant=ce_ema_eval_ramp:strategies=disal,$OLD,$EMA \
 --variant=mse_mean_eval:strategies=disal,$OLD,disal.dynamic_loss=mse \
 --variant=mse_ema_eval_ramp10:strategies=disal,$OLD,$EMA,disal.dynamic_loss=mse,disal.dynamic_weight=10.0 \
 --variant=tb_ce_ema_ramp:strategies=disal,$OLD,$EMA,disal.target_source=train_branch \
 --variant=tb_mse_ema_ramp10:strategies=disal,$OLD,$EMA,disal.target_source=train_branch,disal.dynamic_loss=mse,disal.dynamic_weight=10.0 \
 --variant=tb_mse_ema_ramp30:strategies=disal,$OLD,$EMA,disal.target_source=train_branch,disal.dynamic_loss=mse,disal.dynamic_weight=30.0 \
 --variant=tb_mse_ema_ramp10_b8:strategies=disal,$OLD,$EMA,disal.target_source=train_branch,disal.dynamic_loss=mse,disal.dynamic_weight=10.0,disal.dynamic_batch_size=8
# Second sitting (2026-12-02): the joint branch and the branch's start (second table).
TB=strategies=disal,$EMA,disal.target_source=train_branch,disal.dynamic_loss=mse,disal.dynamic_weight=10.0
python -m disal_jax.ablation --config=configs/default.py --workdir=workdirs/ablation_digits_cycle0 \
 --seeds=0,1,2 --config.full_training=False --config.data.val_fraction=0.1 \
 --config.al.final_fraction=0.1 --config.train.min_steps=600 --config.disal.dynamic_batch_size=32 \
 --variant=tb_mse_ema_ramp10_joint:$TB,disal.branch_start_fraction=0.0,disal.branch=joint \
 --variant=start50_ramp25:$TB,disal.branch_start_fraction=0.5,disal.rampup_fraction=0.25 \
 --variant=start50_ramp50:$TB,disal.branch_start_fraction=0.5,disal.rampup_fraction=0.5 \
 --variant=start33_ramp33:$TB,disal.branch_start_fraction=0.33,disal.rampup_fraction=0.33
# Third sitting (2026-12-04): the target's learning-rate weighting and lambda scaled by the
# labeled fraction, against the defaults of that day (branch from epoch 0), same code.
python -m disal_jax.ablation --config=configs/default.py --workdir=workdirs/ablation_digits_cycle0_3 \
 --seeds=0,1,2 --config.full_training=False --config.data.val_fraction=0.1 \
 --config.al.final_fraction=0.1 --config.train.min_steps=600 --config.disal.dynamic_batch_size=32 \
 --variant=random:strategies=random \
 --variant=defaults:$TB,disal.branch_start_fraction=0.0 \
 --variant=lr_weighted:$TB,disal.branch_start_fraction=0.0,record.weighting=lr \
 --variant=labeled_fraction:$TB,disal.branch_start_fraction=0.0,disal.weight_scale=labeled_fraction
