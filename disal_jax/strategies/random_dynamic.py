"""The control: Random's picks with DISAL's training.

DISAL's dynamic loss changes training (a consistency term on the unlabeled pool), so a DISAL
lead over Random mixes better training with better selection. This strategy trains exactly as
DISAL does (its train-step hook and record, from the `disal` section) and selects as Random
does: its scores are Random's, drawn from the same cycle key, so with the same seed it labels
the same rows as Random in every cycle. Beside DISAL at lambda = 0 (`disal.dynamic_weight=0`:
DISAL's selection, Random's training) it splits a DISAL lead into its two causes:
- disal - random_dynamic: what DISAL's selection adds under the same training;
- random_dynamic - random: what the dynamic loss adds to the same labels.
"""

from __future__ import annotations

from disal_jax.strategies import disal, random
from disal_jax.strategies.base import Strategy

STRATEGY = Strategy(
  name="random_dynamic",
  record=disal.record_level,
  score=random.random_scores,
  make_hook=disal.make_hook,
  reads_sections=("disal",),
  description="control: Random's picks, trained with DISAL's dynamic loss",
  segmentation=True,
)
