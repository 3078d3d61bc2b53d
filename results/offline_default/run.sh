# README's offline default, seed 0, with the defaults of 2026-12-02 (second sitting).
# Run from the repository root; summary.md / summary.csv are its output.
python -m disal_jax.main --config=configs/default.py --workdir=workdirs/default
