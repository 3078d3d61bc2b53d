"""Train state: parameters, BatchNorm statistics, optimiser state, an rng key, extras."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from disal_jax.training import schedule


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics and the key that drives augmentation.

  `extras` holds strategy-owned arrays that live with the model (a module's parameters, an
  EMA teacher); it is an empty dict for plain training.
  """

  batch_stats: Any = None
  rng: jax.Array = None
  extras: Any = struct.field(default_factory=dict)

  def variables(self, params=None) -> dict:
    """The model's variables: `params` (default: the state's) and the batch statistics."""
    return {"params": self.params if params is None else params, "batch_stats": self.batch_stats}


class Optimizer(NamedTuple):
  """An optax GradientTransformation whose learning rate follows the cycle's schedule.

  init / update: optax's (flax's TrainState calls them). The learning rate is an optax
  schedule inside the update (disal_jax.training.schedule), evaluated at the optimiser's
  step count; nothing rewrites the state between steps.
  learning_rate(opt_state) -> () float32: the rate the next update applies, for what must
  see the update's own rate (DISAL's 'lr' fold, the epoch's logged and recorded rate).
  """

  init: optax.TransformInitFn
  update: optax.TransformUpdateFn
  learning_rate: Callable[[optax.OptState], jax.Array]


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> Optimizer:
  """SGD (PyTorch semantics: weight decay added to the gradient, then momentum) or Adam, at
  the learning rate of `schedule.cycle_schedule(train_cfg)`.

  The schedule's length is a cycle's (its steps per epoch follow from the labeled count), a
  value only known when the cycle starts. It is data, not structure: the optimiser state
  holds it (an injected hyper-parameter, `with_steps_per_epoch`), so a new cycle length
  compiles nothing again; the count is the optimiser's own, so a checkpoint of the state
  resumes the schedule where it stopped and `tx.init` (a warm start's reset) starts it
  afresh. Chosen over an optimiser built per cycle with the length as a constant (a new
  optimiser is new static structure of the TrainState: every cycle would compile its steps
  again) and over a rate sent with each batch (a rewrite of the optimiser state at every
  step). Equal settings give the same object: it is static structure of the TrainState, so
  sharing it lets jitted steps be reused across runs of one process.
  """
  return _optimizer(
    train_cfg.optimizer,
    schedule.cycle_schedule(train_cfg),
    float(train_cfg.momentum),
    float(train_cfg.weight_decay),
  )


STEPS_PER_EPOCH = "steps_per_epoch"  # the optimiser state's hyper-parameter: the cycle's


@functools.lru_cache(maxsize=None)
def _optimizer(
  name: str, lr_schedule: schedule.CycleSchedule, momentum: float, weight_decay: float
) -> Optimizer:
  def build(steps_per_epoch):
    learning_rate = lr_schedule.at(steps_per_epoch)
    decay = optax.add_decayed_weights(weight_decay)
    if name == "sgd":
      inner = optax.sgd(learning_rate, momentum=momentum or None)
    else:
      inner = _standard_promotion(optax.adam(learning_rate))
    return optax.chain(decay, inner)

  # 1 until the trainer sets the cycle's (a 0-d array: inject_hyperparams keeps it as data)
  tx = optax.inject_hyperparams(build)(**{STEPS_PER_EPOCH: np.ones((), np.int32)})

  def learning_rate(opt_state) -> jax.Array:
    # inject_hyperparams' count steps with the inner schedule's: both start at 0 (init) and
    # add 1 per update
    return lr_schedule.at(opt_state.hyperparams[STEPS_PER_EPOCH])(opt_state.count)

  return Optimizer(tx.init, tx.update, learning_rate)


def _standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` traced under JAX's standard dtype promotion: optax's Adam mixes Python floats with
  its int32 step count, which jax_numpy_dtype_promotion='strict' (the tests') rejects."""

  def update(updates, state, params=None):
    with jax.numpy_dtype_promotion("standard"):
      return tx.update(updates, state, params)

  return optax.GradientTransformation(tx.init, update)


def create_state(
  model: nn.Module,
  tx: Optimizer,
  rng: jax.Array,
  image_shape: tuple[int, int, int],
  extend_params: Optional[Callable[..., Any]] = None,
) -> TrainState:
  """A fresh state. Pass the same `tx` object every time: it is part of the state's static
  structure, so a new one would make every jitted step compile again.

  extend_params(rng, params, sample_outputs) -> params adds a strategy module's parameters
  (the hook's init_params), so one optimiser trains backbone and module together.
  """
  init_rng, state_rng = jax.random.split(rng)
  zeros = jnp.zeros((1, *image_shape), jnp.float32)
  variables = model.init(init_rng, zeros, train=False)
  params = variables["params"]
  if extend_params is not None:
    outputs = model.apply(variables, zeros, train=False)
    params = extend_params(jax.random.fold_in(init_rng, 1), params, outputs)
  return TrainState.create(
    apply_fn=apply_fn_of(model),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    tx=tx,
    rng=state_rng,
  )


@functools.lru_cache(maxsize=None)
def apply_fn_of(model: nn.Module):
  """`model.apply`, one object per distinct model: each access to `model.apply` makes a new
  bound method, and the TrainState's apply_fn is static structure of every jitted step."""
  return model.apply


def with_steps_per_epoch(state: TrainState, steps_per_epoch: jax.Array) -> TrainState:
  """`state` with its optimiser's schedule set to a cycle of `steps_per_epoch` (() int32)
  steps per epoch: once per cycle, before its first step (the step count is untouched)."""
  hyper = dict(
    state.opt_state.hyperparams, **{STEPS_PER_EPOCH: jnp.asarray(steps_per_epoch, jnp.int32)}
  )
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def learning_rate(state: TrainState) -> jax.Array:
  """() float32: the learning rate of `state`'s next update (its optimiser's schedule)."""
  return state.tx.learning_rate(state.opt_state)


def momentum_trace(state: TrainState):
  """The SGD momentum buffer (a params-shaped pytree), for DISAL's direction='momentum'."""
  traces = optax.tree_utils.tree_get_all_with_path(state.opt_state, "trace")
  if not traces:
    raise ValueError(
      "the optimiser keeps no momentum trace (train.optimizer='sgd' with "
      "train.momentum > 0 is needed for disal.direction='momentum')"
    )
  return traces[0][1]
