"""TOD (Huang et al., temporal output discrepancy): score = 1/2 ||softmax f_c(x) - softmax
f_{c-1}(x)||^2 between the model at the end of this cycle and at the end of the previous one
(docs/strategies.md).

Training adds the reference's auxiliary loss (siyuhuang/TOD, main_TOD.py) in the same jitted
step. The model gets a second linear head on the pooled feature, the consistency head h
(its parameters under CONSISTENCY_KEY); with s = the main head's logits, c = h's, on the
labeled batch x and a batch u of pool samples (augmented, drawn at random each step) and an
EMA teacher T in train mode (batch statistics; its running-statistics updates dropped):
  loss = CE + weight * (mse(s_x, c_x) + mse(s_u, c_u) + mse(c_x, T(x)) + mse(c_u, T(u)))
where mse is the mean over batch x classes (PyTorch's F.mse_loss), so the reference's weights
(0.02 CIFAR-10, 0.05 CIFAR-100, 0.005 SVHN, 0.1 Caltech101) apply as published. The teacher's
parameters live in state.extras and follow T <- a T + (1 - a) theta with
a = min(1 - 1 / (t + 1), ema_decay), t counting the steps since the teacher started (kept in
state.extras, so under train.warm_start the count runs on across cycles as the reference's
`iters` does). The update uses the step's parameters before their update (the reference's
after it: one step apart). The student's BatchNorm statistics updates from the pool batch are
dropped, as in DISAL's branch.

Between cycles: after scoring cycle c, its final variables are written to
<run>/tod_variables_cycle{c}.msgpack; cycle c + 1 reads them as f_c and removes older files. A
resumed cycle therefore reads the same previous model. Cycle 0 has no previous cycle: as in
the reference, it is compared with an untrained model (`tod.first_cycle='untrained'`, an
independent initialisation), or with the EMA teacher ('teacher').

Selection: from cycle 1 on, the highest discrepancies. In cycle 0 the reference (main_TOD.py:
`subset[arg][:ADDENDUM]` in the first cycle, `[-ADDENDUM:]` after it) takes the LOWEST ones,
as `tod.first_cycle_picks='lowest'` (the default) does; 'highest' takes the highest in every
cycle. The scores handed on stay the discrepancies either way.

The reference trains one model through all cycles (warm start); under the default cold start
(train.warm_start=False, the protocol every strategy of a comparison shares) f_{c-1} is the
previous cycle's independently trained model.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import ClassVar

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax import distributed
from disal_jax.errors import check_value
from disal_jax.strategies.base import (
  ConfigSection,
  ReferenceProtocol,
  ScoringContext,
  Strategy,
  batched_pool_scores,
  select_top_k,
)
from disal_jax.training import sharding
from disal_jax.training.augment import Preprocess
from disal_jax.training.trainer import TrainHook

TEACHER = "ema_teacher"
TEACHER_STEP = "ema_teacher_step"
CONSISTENCY_KEY = "tod_consistency_head"
# Folded into the cycle's scoring key for cycle 0's untrained model.
UNTRAINED_STREAM = 0x70D


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
  """The reference's ramp: min(1 - 1 / (step + 1), decay); step counts from 0."""
  return jnp.minimum(1.0 - 1.0 / (step.astype(jnp.float32) + 1.0), decay)


def ema(teacher, params, decay):
  """The teacher's parameters after one EMA step towards `params` (same tree)."""
  return jax.tree.map(
    lambda t, p: decay * t + (1.0 - decay) * jax.lax.stop_gradient(p), teacher, params
  )


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean over every element (batch x classes), as PyTorch's F.mse_loss."""
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def output_discrepancy(logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
  """(B,) 1/2 ||softmax(a) - softmax(b)||^2."""
  pa = jax.nn.softmax(logits_a.astype(jnp.float32), axis=-1)
  pb = jax.nn.softmax(logits_b.astype(jnp.float32), axis=-1)
  return 0.5 * jnp.sum(jnp.square(pa - pb), axis=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CodHook(TrainHook):
  """TOD's addition to the train step (see training.trainer.TrainHook)."""

  weight: float
  ema_decay: float
  batch_size: int
  # each step's pool batch: positions in the padded pool index, whose rows the step reads
  pool_position_inputs: ClassVar[tuple[str, ...]] = ("pool_position_index",)

  def init_params(self, rng, params, sample_outputs):
    """`params` with the consistency head's Dense parameters added."""
    head = nn.Dense(sample_outputs["logits"].shape[-1])
    return {**params, CONSISTENCY_KEY: head.init(rng, sample_outputs["features"])["params"]}

  def init_extras(self, num_train: int, num_classes: int, params) -> dict:
    """The EMA teacher: a copy of `params`, and its () int32 step."""
    del num_train, num_classes
    return {TEACHER: jax.tree.map(jnp.array, params), TEACHER_STEP: jnp.zeros((), jnp.int32)}

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess: Preprocess):
    """(weight x the pool batch's consistency loss against the teacher, metrics, extras
    with the teacher updated)."""
    head = nn.Dense(outputs["logits"].shape[-1])
    consistency = lambda features: head.apply({"params": params[CONSISTENCY_KEY]}, features)
    rows = aux["pool_index"][batch["pool_position_index"]]
    pool_images = preprocess.augment(data.images_at(rows), rng)
    pool, _ = state.apply_fn(
      state.variables(params), pool_images, train=True, mutable=["batch_stats"]
    )  # statistics updates dropped
    teacher_params = state.extras[TEACHER]

    def teacher(images):  # train mode, as the reference's ema_model.train()
      out, _ = state.apply_fn(
        state.variables(teacher_params), images, train=True, mutable=["batch_stats"]
      )
      return jax.lax.stop_gradient(out["logits"])

    cons_x, cons_u = consistency(outputs["features"]), consistency(pool["features"])
    residual = mse(outputs["logits"], cons_x) + mse(pool["logits"], cons_u)
    cod = mse(cons_x, teacher(batch["images"])) + mse(cons_u, teacher(pool_images))
    step = state.extras[TEACHER_STEP]
    extras = {
      **state.extras,
      TEACHER_STEP: step + 1,
      TEACHER: ema(teacher_params, params, ema_decay_at(step, self.ema_decay)),
    }
    return self.weight * (residual + cod), {"cod_loss": cod, "residual_loss": residual}, extras

  def epoch_inputs(self, rng, epoch, num_steps, pool_size, labeled_size, cycle_seed):
    """The pool positions each step draws: (num_steps, batch_size) int64."""
    del epoch, labeled_size, cycle_seed
    # a fresh random batch each step, distinct rows within it (the reference's new iterator
    # over a random sampler per step)
    replace = pool_size < self.batch_size
    return {
      "pool_position_index": np.stack(
        [rng.choice(pool_size, self.batch_size, replace=replace) for _ in range(num_steps)]
      ).astype(np.int32)
    }

  def aux(self, record, pool_index):
    """The pool index (the record is not read)."""
    del record
    return {"pool_index": pool_index}


def make_hook(config: ml_collections.ConfigDict) -> CodHook:
  """The CodHook of the tod config section."""
  t = config.tod
  return CodHook(
    weight=float(t.cod_weight), ema_decay=float(t.ema_decay), batch_size=int(t.pool_batch_size)
  )


@functools.partial(jax.jit, static_argnames=("preprocess",))
def discrepancy_scores(scoring, data, batch, *, preprocess: Preprocess) -> jax.Array:
  """(B,) TOD of rows batch['index'] between scoring['state'] and scoring['earlier']
  ({'params', 'batch_stats'}), both in eval mode."""
  state = scoring["state"]
  images = preprocess.normalise(data.images_at(batch["index"]))
  now = state.apply_fn(state.variables(), images, train=False)["logits"]
  earlier = state.apply_fn(scoring["earlier"], images, train=False)["logits"]
  return output_discrepancy(now, earlier)


def variables_path(run_dir: pathlib.Path, cycle: int) -> pathlib.Path:
  """Where the cycle's model variables are kept for the next cycle's discrepancy."""
  return run_dir / f"tod_variables_cycle{cycle}.msgpack"


def _earlier_variables(ctx: ScoringContext):
  state = ctx.result.state
  if ctx.cycle == 0:
    if ctx.config.tod.first_cycle == "teacher":
      return {"params": state.extras[TEACHER], "batch_stats": state.batch_stats}
    untrained = ctx.data.init_state(jax.random.fold_in(ctx.rng, UNTRAINED_STREAM))
    return untrained.variables()
  path = variables_path(ctx.run_dir, ctx.cycle - 1)
  try:  # the state's variables give the structure; nothing is copied off the device for it
    earlier = flax.serialization.from_bytes(state.variables(), path.read_bytes())
  except (OSError, ValueError, KeyError) as e:
    raise RuntimeError(
      f"TOD needs the model of cycle {ctx.cycle - 1}, kept at {path}, and could not read it "
      f"({type(e).__name__}: {e}). Rerun this strategy from its start with --force."
    ) from e
  return sharding.put_replicated(earlier, ctx.data.mesh)


def score(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 discrepancy between this cycle's model and the previous one's."""
  if ctx.run_dir is None:
    raise RuntimeError(
      "TOD keeps the previous cycle's model in the run folder; the loop did not give one"
    )
  scoring = {"state": ctx.result.state, "earlier": _earlier_variables(ctx)}
  fn = functools.partial(discrepancy_scores, preprocess=ctx.data.preprocess)
  scores = batched_pool_scores(ctx, fn, scoring)
  path = variables_path(ctx.run_dir, ctx.cycle)
  if distributed.is_primary():  # one writer of a multi-host run; every host reads it
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(flax.serialization.to_bytes(jax.device_get(ctx.result.state.variables())))
    tmp.replace(path)  # atomic: a killed write never leaves a half file under the real name
    for old in ctx.run_dir.glob("tod_variables_cycle*.msgpack"):
      if old != path and old != variables_path(ctx.run_dir, ctx.cycle - 1):
        old.unlink()
  distributed.barrier(f"tod_variables_{ctx.cycle}")
  return scores


def select(scores: np.ndarray, ctx: ScoringContext, k: int) -> np.ndarray:
  """The k candidates of highest discrepancy (scores: (P,) float); in cycle 0 under
  tod.first_cycle_picks='lowest', the k of lowest (the reference's). Ties at random."""
  if ctx.cycle == 0 and ctx.config.tod.first_cycle_picks == "lowest":
    return select_top_k(-np.asarray(scores, np.float64), ctx, k)
  return select_top_k(scores, ctx, k)


def defaults() -> ml_collections.ConfigDict:
  """The tod config section's defaults."""
  s = ml_collections.ConfigDict()
  # Weight of the auxiliary loss (means over batch x classes, as the reference): 0.02
  # CIFAR-10, 0.05 CIFAR-100, 0.005 SVHN, 0.1 Caltech101.
  s.cod_weight = 0.02
  s.ema_decay = 0.999  # the teacher's, reached by the ramp min(1 - 1/(t+1), decay)
  s.pool_batch_size = 128  # pool samples per train step for the auxiliary loss
  # Cycle 0's earlier model: 'untrained' (an independent initialisation, the reference's) or
  # 'teacher' (the EMA teacher).
  s.first_cycle = "untrained"
  # Cycle 0's picks: the 'lowest' discrepancies (the reference's, main_TOD.py) or the
  # 'highest' (as in every later cycle).
  s.first_cycle_picks = "lowest"
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the tod section's values are invalid."""
  s = config.tod
  check_value(s.cod_weight >= 0, "tod.cod_weight", s.cod_weight, ">= 0")
  check_value(0 <= s.ema_decay < 1, "tod.ema_decay", s.ema_decay, "in [0, 1)")
  check_value(
    s.first_cycle in ("untrained", "teacher"),
    "tod.first_cycle",
    s.first_cycle,
    "'untrained' or 'teacher'",
  )
  check_value(
    s.first_cycle_picks in ("lowest", "highest"),
    "tod.first_cycle_picks",
    s.first_cycle_picks,
    "'lowest' or 'highest'",
  )
  check_value(
    s.pool_batch_size >= 1 and s.pool_batch_size % num_devices == 0,
    "tod.pool_batch_size",
    s.pool_batch_size,
    f"a positive multiple of the device count ({num_devices})",
  )


# al.protocol='reference': how the published code runs a cycle.
REFERENCE = ReferenceProtocol(
  subset_size=25_000,
  warm_start=True,
  source=(
    "siyuhuang/TOD config/cifar10.py:8 (SUBSET = 25000), main_TOD.py:290-303 (models "
    "built before the cycle loop), main_TOD.py:324-330"
  ),
)

STRATEGY = Strategy(
  name="tod",
  record="none",
  score=score,
  select=select,
  make_hook=make_hook,
  description="TOD: output discrepancy between this and the previous "
  "cycle's model, COD loss with an EMA teacher",
  config_section=ConfigSection("tod", defaults, check),
  reference=REFERENCE,
)
