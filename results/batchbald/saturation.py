"""How fast BatchBALD's objective saturates at log K on a synthetic pool.

  python results/batchbald/saturation.py

A pool of 600 candidates, 10 classes, K MC-Dropout predictions each (softmax of a per-sample
logit plus per-pass noise: per-sample BALD about 0.2-0.4 nats, as a small CIFAR model's).
BatchBALD (`disal_jax.strategies.batchbald.greedy`) picks 30; the script prints the batch's
mutual information a(A) = H(y_A) - sum E_k H(y_j | w_k) after n picks, H(y_A) estimated from
10,000 configurations drawn from p(y_A). With K passes a(A) <= log K (the MI is bounded by
the entropy of the K equally likely weight draws): past that, every candidate's gain is
about zero and the greedy's picks follow the estimator's noise.
"""

import jax
import jax.numpy as jnp
import numpy as np

from disal_jax.strategies import batchbald

POOL, CLASSES, PICKS = 600, 10, 30  # candidates, classes, batch size
CONFIGURATIONS = 10_000  # drawn configurations for the printed H(y_A)
PREFIXES = (1, 3, 10, 20, 30)  # batch sizes at which a(A) is printed


def batch_information(
  probs: jax.Array, picks: np.ndarray, conditional: np.ndarray, key: jax.Array
) -> float:
  """a(A) of the picked rows of probs (P, K, C): H(y_A) by sampling, minus their E_k H."""
  table = batchbald.sampled_table(probs[picks], CONFIGURATIONS, key)  # (M, K)
  q = np.asarray(table.mean(axis=1), np.float64)  # p(y^(m)), y^(m) drawn from p(y_A)
  return float(-np.log(q[q > 0]).mean() - conditional[picks].sum())


def main() -> None:
  rng = np.random.default_rng(0)
  for passes in (10, 100):
    logits = 2.0 * rng.normal(size=(POOL, 1, CLASSES)) + rng.normal(size=(POOL, passes, CLASSES))
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    configurations = 100 * passes  # the greedy's own table, a multiple of K
    picks = batchbald.greedy(
      probs, PICKS, configurations, 256, jax.random.key(0), ties=np.zeros(POOL)
    )  # continuous scores: no ties
    conditional = np.asarray(batchbald.entropy(probs).mean(axis=1))
    bald = np.asarray(batchbald.entropy(probs.mean(axis=1))) - conditional
    values = [
      f"n={n}: {batch_information(probs, picks[:n], conditional, jax.random.key(1)):.2f}"
      for n in PREFIXES
    ]
    print(
      f"K={passes} (log K = {np.log(passes):.2f}), per-sample BALD mean {bald.mean():.2f} "
      f"max {bald.max():.2f}; a(A) " + ", ".join(values)
    )


if __name__ == "__main__":
  main()
