# Issue 22's strategies on configs/cifar10_cpu.py, 3 seeds, into the same sweep folder as
# results/disal_dynamic_loss/cifar10_cpu_al.sh (the report then compares them with DISAL,
# Random and the paper's baselines). Run from the repository root; it resumes, and finished
# runs are skipped. About 10 minutes per (strategy, seed) on 2 CPU cores.
COMMON="--config=configs/cifar10_cpu.py --workdir=workdirs/cifar10_cpu_al --seeds=0,1,2 --config.full_training=False"
python -m disal_jax.ablation $COMMON \
 --variant=entropy:strategies=entropy \
 --variant=margin:strategies=margin \
 --variant=least_confidence:strategies=least_confidence \
 --variant=badge:strategies=badge \
 --variant=batchbald:strategies=batchbald \
 --variant=typiclust:strategies=typiclust \
 --variant=probcover:strategies=probcover
# BatchBALD with K = 100 MC-Dropout passes (the reference's MNIST setting): with K = 10 the
# batch's mutual information is bounded by log 10 nats, which a 150-sample batch exhausts.
python -m disal_jax.ablation $COMMON --variant=batchbald_k100:strategies=batchbald,batchbald.passes=100
# The committed table (results/disal_dynamic_loss/cifar10_cpu_al.md), with Random's runs of
# results/disal_dynamic_loss/cifar10_cpu_al.sh and each strategy paired with them by seed; every
# cycle of every run is in cifar10_cpu_al_runs.csv beside it (runs_csv.py, cifar10_cpu_al.sh's
# last command).
python -m disal_jax.ablation $COMMON --table_only --baseline=random \
 --variant=random:strategies=random,full_training=True \
 --variant=entropy:strategies=entropy --variant=margin:strategies=margin \
 --variant=least_confidence:strategies=least_confidence --variant=badge:strategies=badge \
 --variant=batchbald:strategies=batchbald --variant=typiclust:strategies=typiclust \
 --variant=probcover:strategies=probcover \
 --variant=batchbald_k100:strategies=batchbald,batchbald.passes=100
