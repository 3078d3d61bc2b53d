"""Train state: parameters, BatchNorm statistics, optimiser state, an rng key, extras."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from flax.training import train_state


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics and the key that drives augmentation.

  `extras` holds strategy-owned arrays that live with the model (a module's parameters, an
  EMA teacher); it is an empty dict for plain training.
  """
  batch_stats: Any = None
  rng: jax.Array = None
  extras: Any = struct.field(default_factory=dict)

  def variables(self, params=None) -> dict:
    return {"params": self.params if params is None else params,
            "batch_stats": self.batch_stats}


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD (PyTorch semantics: weight decay added to the gradient, then momentum) or Adam.

  The learning rate is an injected hyper-parameter, set per epoch by the trainer. Equal
  settings give the same object: it is static structure of the TrainState, so sharing it
  lets jitted steps be reused across runs of one process.
  """
  return _optimizer(train_cfg.optimizer, float(train_cfg.learning_rate),
                    float(train_cfg.momentum), float(train_cfg.weight_decay))


@functools.lru_cache(maxsize=None)
def _optimizer(name: str, learning_rate: float, momentum: float, weight_decay: float
               ) -> optax.GradientTransformation:
  def build(learning_rate):
    decay = optax.add_decayed_weights(weight_decay)
    if name == "sgd":
      inner = optax.sgd(learning_rate, momentum=momentum or None)
    else:
      inner = _standard_promotion(optax.adam(learning_rate))
    return optax.chain(decay, inner)
  return optax.inject_hyperparams(build)(learning_rate=learning_rate)


def _standard_promotion(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` traced under JAX's standard dtype promotion: optax's Adam mixes Python floats with
  its int32 step count, which jax_numpy_dtype_promotion='strict' (the tests') rejects."""
  def update(updates, state, params=None):
    with jax.numpy_dtype_promotion("standard"):
      return tx.update(updates, state, params)
  return optax.GradientTransformation(tx.init, update)


def create_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                 image_shape: tuple[int, int, int],
                 extend_params: Optional[Callable[..., Any]] = None) -> TrainState:
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
  return TrainState.create(apply_fn=apply_fn_of(model), params=params,
                           batch_stats=variables.get("batch_stats", {}),
                           tx=tx, rng=state_rng)


@functools.lru_cache(maxsize=None)
def apply_fn_of(model: nn.Module):
  """`model.apply`, one object per distinct model: each access to `model.apply` makes a new
  bound method, and the TrainState's apply_fn is static structure of every jitted step."""
  return model.apply


def with_learning_rate(state: TrainState, lr: jax.Array) -> TrainState:
  hyper = dict(state.opt_state.hyperparams, learning_rate=jnp.asarray(lr, jnp.float32))
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))


def momentum_trace(state: TrainState):
  """The SGD momentum buffer (a params-shaped pytree), for DISAL's direction='momentum'."""
  traces = optax.tree_utils.tree_get_all_with_path(state.opt_state, "trace")
  if not traces:
    raise ValueError("the optimiser keeps no momentum trace (train.optimizer='sgd' with "
                     "train.momentum > 0 is needed for disal.direction='momentum')")
  return traces[0][1]
