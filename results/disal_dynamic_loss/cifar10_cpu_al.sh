# Issue 26's sweep: configs/cifar10_cpu.py, 3 seeds; DISAL with the defaults of 2026-12-02
# (second sitting: the dynamic branch from half the epochs), DISAL at lambda = 0, Random, then
# the baselines. Every DISAL variant names its keys, so the script reproduces the table
# whatever the defaults become. Run from the repository root; it resumes, and a run whose
# results.json holds every cycle is skipped. About 10 minutes per (variant, seed) on 2 CPU
# cores. Committed: cifar10_cpu_al.md (the tables) and cifar10_cpu_al_runs.csv (every cycle of
# every run, written by runs_csv.py, last command); the runs' own results.json files are in
# commit 86ba949's tree (results/disal_dynamic_loss/cifar10_cpu_al/).
DISAL=strategies=disal,disal.target_source=train_branch,disal.dynamic_loss=mse,record.weighting=ema,record.ema_decay=0.6,disal.weight_schedule=rampup,disal.rampup_fraction=0.5,disal.dynamic_weight=10.0,disal.dynamic_batch_size=32,disal.branch=separate
COMMON="--config=configs/cifar10_cpu.py --workdir=workdirs/cifar10_cpu_al --seeds=0,1,2 --config.full_training=False"
# The paper's strategies (second command, and the committed table below).
PAPER="--variant=random:strategies=random,full_training=True
 --variant=disal:$DISAL,disal.branch_start_fraction=0.5
 --variant=disal_lambda0:$DISAL,disal.branch_start_fraction=0.5,disal.dynamic_weight=0.0
 --variant=gradnorm_entropy:strategies=gradnorm_entropy --variant=coreset:strategies=coreset
 --variant=mc_dropout:strategies=mc_dropout --variant=learning_loss:strategies=learning_loss"
python -m disal_jax.ablation $COMMON \
 --variant=random:strategies=random,full_training=True \
 --variant=disal:$DISAL,disal.branch_start_fraction=0.5 \
 --variant=disal_lambda0:$DISAL,disal.branch_start_fraction=0.5,disal.dynamic_weight=0.0
python -m disal_jax.ablation $COMMON $PAPER
# DISAL with a class-balanced top-K (the same number of picks per predicted class), tried on
# validation after its top-K was seen to favour the vehicle classes (class_balance.md).
python -m disal_jax.ablation $COMMON \
 --variant=disal_balanced:$DISAL,disal.branch_start_fraction=0.5,disal.selection=class_balanced
# The score's own options with the chosen dynamic loss (issue 26's design space): the
# per-sample gradient norm instead of the projection, the entropy instead of the dynamic
# target, the momentum buffer instead of theta_start - theta_end.
python -m disal_jax.ablation $COMMON \
 --variant=disal_norm:$DISAL,disal.branch_start_fraction=0.5,disal.score=norm \
 --variant=disal_expected:$DISAL,disal.branch_start_fraction=0.5,disal.score_target=expected \
 --variant=disal_momentum:$DISAL,disal.branch_start_fraction=0.5,disal.direction=momentum
# The first sitting's DISAL (branch from epoch 0): its 2026-12-02 run (seed 0, kept as
# disal_start0_20261202 with lambda0_start0) looked ahead of Random; rerun on 2026-12-04's code
# (it became the default):
python -m disal_jax.ablation $COMMON \
 --variant=disal_start0:$DISAL,disal.branch_start_fraction=0.0
# The class-balanced top-K with the branch from epoch 0 (the class-balanced top-K had the
# highest DISAL mean with the branch from half; 2026-12-04: a tie with Random, +0.54 +- 0.80).
python -m disal_jax.ablation $COMMON \
 --variant=disal_start0_balanced:$DISAL,disal.branch_start_fraction=0.0,disal.selection=class_balanced
# The committed tables (cifar10_cpu_al.md) and the curves (kept out of the repository, in
# workdirs/cifar10_cpu_al/plots/): the
# paper's strategies, then DISAL's design variants, from the finished runs.
python -m disal_jax.ablation $COMMON --table_only --baseline=random $PAPER
mkdir -p workdirs/cifar10_cpu_al/plots
cp workdirs/cifar10_cpu_al/ablation_val.png workdirs/cifar10_cpu_al/plots/paper_val.png
cp workdirs/cifar10_cpu_al/ablation_test.png workdirs/cifar10_cpu_al/plots/paper_test.png
python -m disal_jax.ablation $COMMON --table_only --baseline=random \
 --variant=random:strategies=random,full_training=True \
 --variant=disal:$DISAL,disal.branch_start_fraction=0.5 \
 --variant=disal_lambda0:$DISAL,disal.branch_start_fraction=0.5,disal.dynamic_weight=0.0 \
 --variant=disal_start0:$DISAL,disal.branch_start_fraction=0.0 \
 --variant=disal_norm:$DISAL,disal.branch_start_fraction=0.5,disal.score=norm \
 --variant=disal_expected:$DISAL,disal.branch_start_fraction=0.5,disal.score_target=expected \
 --variant=disal_momentum:$DISAL,disal.branch_start_fraction=0.5,disal.direction=momentum \
 --variant=disal_balanced:$DISAL,disal.branch_start_fraction=0.5,disal.selection=class_balanced \
 --variant=disal_start0_balanced:$DISAL,disal.branch_start_fraction=0.0,disal.selection=class_balanced
cp workdirs/cifar10_cpu_al/ablation_val.png workdirs/cifar10_cpu_al/plots/disal_variants_val.png
python results/disal_dynamic_loss/runs_csv.py workdirs/cifar10_cpu_al > \
 results/disal_dynamic_loss/cifar10_cpu_al_runs.csv
