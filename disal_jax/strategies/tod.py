"""TOD (Huang et al., temporal output discrepancy): score = 1/2 ||softmax f_c(x) - softmax
f_{c-1}(x)||^2 between the model at the end of this cycle and at the end of the previous one
(../shared/METHOD.md).

Training adds the COD auxiliary loss in the same jitted step: on a batch of pool samples
(augmented, drawn like DISAL's dynamic branch), weight * mean ||z_student - z_teacher||^2 on the
logits, with an EMA teacher (eval mode, the student's running statistics) whose parameters live
in state.extras and follow teacher <- decay * teacher + (1 - decay) * params each step (from the
step's parameters before their update). The student's BatchNorm statistics updates from the pool
branch are dropped, as in DISAL's.

Between cycles: after scoring cycle c, its final variables are written to
<run>/tod_variables_cycle{c}.msgpack; cycle c + 1 reads them as f_c and removes older files. A
resumed cycle therefore reads the same previous model. Cycle 0 has no previous cycle: its
"earlier" model is the EMA teacher (a smoothed, older view of the same training).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax import distributed
from disal_jax.strategies.base import ScoringContext, Strategy, batched_pool_scores
from disal_jax.training import sharding
from disal_jax.training.augment import Preprocess

TEACHER = "ema_teacher"


def ema(teacher, params, decay: float):
  return jax.tree.map(lambda t, p: decay * t + (1.0 - decay) * jax.lax.stop_gradient(p),
                      teacher, params)


def output_discrepancy(logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
  """(B,) 1/2 ||softmax(a) - softmax(b)||^2."""
  pa = jax.nn.softmax(logits_a.astype(jnp.float32), axis=-1)
  pb = jax.nn.softmax(logits_b.astype(jnp.float32), axis=-1)
  return 0.5 * jnp.sum(jnp.square(pa - pb), axis=-1)


@dataclasses.dataclass(frozen=True)
class CodHook:
  """TOD's addition to the train step (see training.trainer.TrainHook)."""
  weight: float
  ema_decay: float
  batch_size: int

  def init_extras(self, num_train: int, num_classes: int, params) -> dict:
    del num_train, num_classes
    return {TEACHER: jax.tree.map(jnp.array, params)}

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess: Preprocess):
    del outputs
    rows = aux["pool_index"][batch["pool_position_index"]]
    images = preprocess.augment(data.images[rows], rng)
    student, _ = state.apply_fn(state.variables(params), images, train=True,
                                mutable=["batch_stats"])  # statistics updates dropped
    teacher_params = state.extras[TEACHER]
    teacher = state.apply_fn(state.variables(teacher_params), images, train=False)
    cod = jnp.mean(jnp.sum(jnp.square(student["logits"]
                                      - jax.lax.stop_gradient(teacher["logits"])), axis=-1))
    extras = {**state.extras, TEACHER: ema(teacher_params, params, self.ema_decay)}
    return self.weight * cod, {"cod_loss": cod}, extras

  def epoch_inputs(self, rng, epoch, num_steps, pool_size, labeled_size, cycle_seed):
    del epoch, labeled_size, cycle_seed
    return {"pool_position_index": rng.integers(0, pool_size, (num_steps, self.batch_size),
                                                dtype=np.int32)}

  def aux(self, record, pool_index):
    del record
    return {"pool_index": pool_index}


def make_hook(config: ml_collections.ConfigDict) -> CodHook:
  t = config.tod
  return CodHook(float(t.cod_weight), float(t.ema_decay), int(t.pool_batch_size))


@functools.partial(jax.jit, static_argnames=("preprocess",))
def discrepancy_scores(scoring, data, batch, *, preprocess: Preprocess) -> jax.Array:
  """(B,) TOD of rows batch['index'] between scoring['state'] and scoring['earlier']
  ({'params', 'batch_stats'}), both in eval mode."""
  state = scoring["state"]
  images = preprocess.normalise(data.images[batch["index"]])
  now = state.apply_fn(state.variables(), images, train=False)["logits"]
  earlier = state.apply_fn(scoring["earlier"], images, train=False)["logits"]
  return output_discrepancy(now, earlier)


def variables_path(run_dir: pathlib.Path, cycle: int) -> pathlib.Path:
  return run_dir / f"tod_variables_cycle{cycle}.msgpack"


def _earlier_variables(ctx: ScoringContext):
  state = ctx.result.state
  if ctx.cycle == 0:
    return {"params": state.extras[TEACHER], "batch_stats": state.batch_stats}
  path = variables_path(ctx.run_dir, ctx.cycle - 1)
  try:  # the state's variables give the structure; nothing is copied off the device for it
    earlier = flax.serialization.from_bytes(state.variables(), path.read_bytes())
  except (OSError, ValueError, KeyError) as e:
    raise RuntimeError(
        f"TOD needs the model of cycle {ctx.cycle - 1}, kept at {path}, and could not read it "
        f"({type(e).__name__}: {e}). Rerun this strategy from its start with --force."
    ) from e
  return sharding.put_replicated(earlier, ctx.trainer.mesh)


def score(ctx: ScoringContext) -> np.ndarray:
  if ctx.run_dir is None:
    raise RuntimeError("TOD keeps the previous cycle's model in the run folder; the loop did "
                       "not give one")
  scoring = {"state": ctx.result.state, "earlier": _earlier_variables(ctx)}
  fn = functools.partial(discrepancy_scores, preprocess=ctx.trainer.preprocess)
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


STRATEGY = Strategy(name="tod", record="none", score=score, make_hook=make_hook,
                    description="TOD: output discrepancy between this and the previous "
                                "cycle's model, COD loss with an EMA teacher")
