# How long must a cycle train? Random at the first budget (300 labeled) of configs/cifar10_cpu.py,
# seed 0, validation split of 2,000 training images. Run from the repository root.
python -m disal_jax.ablation --config=configs/cifar10_cpu.py --workdir=workdirs/cifar10_cpu_regime \
 --seeds=0 --config.full_training=False --config.al.final_fraction=0.1 --config.strategies=random \
 --variant=w16_e15:model.width=16,train.min_steps=0 \
 --variant=w16_min300:model.width=16,train.min_steps=300 \
 --variant=w16_min900:model.width=16,train.min_steps=900 \
 --variant=w8_min300:model.width=8,train.min_steps=300 \
 --variant=w8_min900:model.width=8,train.min_steps=900
