# Issue 26's sweep: configs/cifar10_cpu.py, DISAL (defaults of 2026-12-02), DISAL with
# lambda = 0, and the baselines, three seeds. Run from the repository root; it resumes.
# About 10 minutes per (strategy, seed) on 2 CPU cores, 3.5 hours in all.
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir=workdirs/cifar10_cpu_al \
 --seeds=0,1,2 --config.full_training=False \
 --variant=random:strategies=random,full_training=True \
 --variant=disal:strategies=disal \
 --variant=disal_lambda0:strategies=disal,disal.dynamic_weight=0.0 \
 --variant=gradnorm_entropy:strategies=gradnorm_entropy \
 --variant=coreset:strategies=coreset \
 --variant=mc_dropout:strategies=mc_dropout \
 --variant=learning_loss:strategies=learning_loss
# Finished runs are kept under cifar10_cpu_al/<variant>/<strategy>/seed_<s>/results.json
# (2026-12-02: random seed 0 and its Full Training). A run whose results.json is here need
# not run again: run the remaining (variant, seed) pairs and copy these in beside them;
# `python -m disal_jax.ablation ... --table_only` then tabulates all.
