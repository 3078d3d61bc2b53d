"""The small module Learning Loss and TiDAL train on the backbone's four stage feature maps.

Per stage: global average pool, Dense(hidden), ReLU; the four are concatenated (4 * hidden)
and a Dense maps them to `outputs` (1 predicted loss for Learning Loss, C class scores for
TiDAL), as in docs/strategies.md. Its parameters live beside the backbone's in the train
state's params under `PARAMS_KEY`, so the one optimiser trains both (the references use the
same SGD settings for the module).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from disal_jax.errors import check_value

PARAMS_KEY = "stage_head"


class StageHead(nn.Module):
  """A head over the backbone's four stage maps: each pooled and projected to `hidden`,
  concatenated, then a Dense to `outputs`."""

  outputs: int
  hidden: int = 128

  @nn.compact
  def __call__(self, stages: Sequence[jax.Array]) -> jax.Array:
    """stages: four (B, H_i, W_i, C_i) maps -> (B, outputs) float32."""
    pooled = [
      nn.relu(
        nn.Dense(self.hidden, name=f"stage{i + 1}")(jnp.mean(s.astype(jnp.float32), axis=(1, 2)))
      )
      for i, s in enumerate(stages)
    ]
    return nn.Dense(self.outputs, name="out")(jnp.concatenate(pooled, axis=-1))


def init_params(head: StageHead, rng: jax.Array, params: Any, sample_outputs: dict) -> Any:
  """The backbone's params with the head's added under PARAMS_KEY."""
  head_params = head.init(rng, sample_outputs["stages"])["params"]
  return {**params, PARAMS_KEY: head_params}


def apply(
  head: StageHead, params: Any, stages: Sequence[jax.Array], detach: Any = False
) -> jax.Array:
  """The head on `stages` with the params of a train state. `detach` (a bool, may be traced)
  stops the gradient into the backbone (Learning Loss after 60% of the epochs)."""
  stages = [jnp.where(detach, jax.lax.stop_gradient(s), s) for s in stages]
  return head.apply({"params": params[PARAMS_KEY]}, stages)


def detach_epoch(epochs: int, fraction: float) -> int:
  """First (0-based) epoch whose head input is detached from the backbone.

  The Learning Loss reference detaches when `epoch > epoch_loss` (120 of 200 epochs, epochs
  counted from 0): the first detached epoch is round(fraction * epochs) + 1, so 121 of 200.
  fraction = 1 never detaches (returns `epochs + 1`).
  """
  return int(round(fraction * epochs)) + 1


def detach_inputs(epoch: int, num_steps: int, detach_from_epoch: int) -> dict[str, np.ndarray]:
  """The per-step 'detach_head' flags of one epoch (a hook's epoch_inputs)."""
  return {"detach_head": np.full((num_steps,), epoch >= detach_from_epoch)}


class DetachingHeadHook:
  """What the train hooks of a stage-map module share (Learning Loss, TiDAL): per-step
  `detach_head` flags from `detach_from_epoch` on (a field of the hook), and no aux inputs.

  A mixin listed before training.trainer.TrainHook among a hook's bases (models sit below
  training, so it cannot subclass TrainHook itself). 'detach_head' is one flag per step,
  replicated on every device (declared neither batch-like nor a pool position).
  """

  def epoch_inputs(self, rng, epoch, num_steps, pool_size, labeled_size, cycle_seed):
    """Per-step 'detach_head' flags, (num_steps,) bool: set from `detach_from_epoch` on."""
    del rng, pool_size, labeled_size, cycle_seed
    return detach_inputs(epoch, num_steps, self.detach_from_epoch)

  def aux(self, record, pool_index):
    """Nothing: the module reads no record."""
    del record, pool_index
    return {}


def check_keys(config, name: str) -> None:
  """Checks weight, hidden and detach_fraction of config.<name> (Learning Loss, TiDAL)."""
  s = config[name]
  check_value(s.weight >= 0, f"{name}.weight", s.weight, ">= 0")
  check_value(s.hidden >= 1, f"{name}.hidden", s.hidden, ">= 1")
  check_value(
    0 <= s.detach_fraction <= 1, f"{name}.detach_fraction", s.detach_fraction, "in [0, 1]"
  )
