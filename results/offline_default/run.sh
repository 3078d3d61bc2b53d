# README's offline default, seed 0, on the code of 2026-12-04 (DISAL's branch from epoch 0).
# Run from the repository root; summary.md / summary.csv are its output.
python -m disal_jax.main --config=configs/default.py --workdir=workdirs/default
