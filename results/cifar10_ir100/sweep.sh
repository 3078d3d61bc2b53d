# Issue 38: the CIFAR10-IR100 sweep on 2 CPU cores (configs/cifar10_ir100_cpu.py), seed by
# seed, resumable: finished runs are skipped, so rerunning the script after a kill goes on.
#   nice -n 10 bash results/cifar10_ir100/sweep.sh [workdir]
#   python results/cifar10_ir100/report.py <workdir> results/cifar10_ir100
# Strategies: the discrimination check's three (Random, CoreSet, margin), then DISAL at its
# defaults, the control (Random's picks with DISAL's training), Learning Loss, MC-Dropout,
# BADGE; and DISAL at λ = 0 (its train branch and score, no dynamic loss) in a folder of its
# own, linked into the sweep as disal_lambda0 so that the report pairs it with Random.
set -euo pipefail
WORKDIR=${1:-workdirs/cifar10_ir100_cpu}
WORKDIR=${WORKDIR%/}  # the λ = 0 folder is its sibling
CONFIG=configs/cifar10_ir100_cpu.py
STRATEGIES=random,coreset,margin,disal,random_dynamic,learning_loss,mc_dropout,badge
mkdir -p "$WORKDIR"
for SEED in 0 1 2; do
  python -m disal_jax.sweep --config=$CONFIG --strategies=$STRATEGIES --seeds=$SEED \
    --workdir="$WORKDIR"
  python -m disal_jax.sweep --config=$CONFIG --config.disal.dynamic_weight=0 \
    --config.full_training=False --strategies=disal --seeds=$SEED --workdir="$WORKDIR.lambda0"
  ln -sfn "$(realpath "$WORKDIR.lambda0/disal")" "$WORKDIR/disal_lambda0"
done
