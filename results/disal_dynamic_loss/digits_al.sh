# Whole AL runs of the offline default (configs/default.py as of 2026-12-02), three seeds.
# Run from the repository root.
OLD=disal.target_source=eval_pass,disal.dynamic_loss=ce,record.weighting=mean,disal.weight_schedule=constant,disal.dynamic_weight=1.0
python -m disal_jax.ablation --config=configs/default.py --workdir=workdirs/ablation_digits_al \
 --seeds=0,1,2 --config.full_training=False \
 --variant=random:strategies=random,full_training=True \
 --variant=disal:strategies=disal,disal.branch_start_fraction=0.0 \
 --variant=disal_lambda0:strategies=disal,disal.dynamic_weight=0.0,disal.branch_start_fraction=0.0 \
 --variant=disal_before:strategies=disal,$OLD,disal.branch_start_fraction=0.0
