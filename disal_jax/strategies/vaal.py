"""VAAL (Sinha et al., variational adversarial active learning; docs/strategies.md).

After the cycle's training (VAAL does not read the task model), a fresh VAE and discriminator
(`models/vaal.py`) learn on labeled and unlabeled images: per iteration, `vaal.vae_steps` VAE
steps on

  MSE(x_L) + beta KL(x_L) + MSE(x_U) + beta KL(x_U)
    + adversary_weight [BCE(D(mu_L), 1) + BCE(D(mu_U), 1)]

(the VAE learns a latent space in which the discriminator takes everything for labeled), then
one discriminator step on BCE(D(mu_L), 1) + BCE(D(mu_U), 0); Adam for both. The selection is
the K unlabeled samples the discriminator finds least "labeled": the lowest D(mu).

As the reference code (sinhasam/vaal), by default: the labeled and the unlabeled batch go
through the VAE in separate passes, each standardised by its own BatchNorm batch statistics,
in training and in the discriminator's step; scoring keeps the VAE in train mode (its
`AdversarySampler.sample` never calls eval()), so each scoring batch of `batch_size` pool
samples, in random order, is standardised by its own statistics and a sample's score depends
on the batch it falls in; images are scaled to [-1, 1] ((x - 0.5) / 0.5) and flipped at random,
scoring's too (its training set's transform flips whatever it serves).

Choices, each a config key (`vaal.*`):
- `batch_norm`: 'separate' (the reference) or 'joint': both batches in one pass, with one
  set of statistics (see `_iteration` for when that matters).
- `score_batch_norm`: 'batch' (the reference) or 'running': eval mode, the running
  statistics, so a sample's score does not depend on its batch.
- `normalise`: 'half' (the reference's (x - 0.5) / 0.5) or 'task': the task model's mean
  and std. `flip`: 'all' (the reference), 'train' (training batches only: deterministic
  scores given the batches) or 'none'.
- Images are resized on device to `image_size` (32): the networks are the reference's 32 px
  ones, and the reference's NaN on large images (exp(logvar) overflowing in the KL) does not
  arise from the resolution.
- KL summed over latent dimensions and over the batch, as the reference (`kl_reduction='sum'`;
  'mean' averages over the batch instead, so beta does not scale with the batch size).
- Both sets get the same augmentation (flips at most), so the discriminator cannot key on it.
- Length (`num_iterations`): `epochs` passes of `batch_size` over the whole training set, as
  the reference (`iterations_per='train_set'`), or over the labeled set ('labeled', about 10x
  fewer at the first budgets), rounded up to whole jitted calls of `steps_per_call`
  iterations (a `lax.scan` each). Each VAE step of an iteration draws its own labeled and
  unlabeled batch; the discriminator step reuses the last (the reference's loop).
- Between calls the losses are checked: a non-finite loss, or a reconstruction error above
  `max_loss` (the images are standardised, so a healthy one stays near 1), stops the run with
  `VaalDiverged`, naming the cycle and iteration. The cycle's trained model is already
  checkpointed by then; nothing labeled or trained is lost, and `max_loss` may change on
  resumption (the section's `resume_safe`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from disal_jax.errors import VaalDiverged, check_value
from disal_jax.models import vaal as vaal_models
from disal_jax.strategies.base import (
  ConfigSection,
  ScoringContext,
  Strategy,
  map_rows,
  pool_capacity,
)
from disal_jax.training import sharding
from disal_jax.training.augment import Preprocess
from disal_jax.training.trainer import epoch_batches

# Folded into the cycle's key for the scoring batches' order and flips.
SCORE_STREAM = 0x5C0


@dataclasses.dataclass(frozen=True)
class Settings:
  """The static part of VAAL's training (hashable: jitted functions close over it)."""

  vae: vaal_models.VAE
  discriminator: vaal_models.Discriminator
  image_size: int
  beta: float
  adversary_weight: float
  learning_rate: float
  vae_steps: int
  kl_reduction: str
  batch_norm: str
  score_batch_norm: str
  normalise: str
  flip: str

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "Settings":
    """The Settings of the vaal config section."""
    v = config.vaal
    return cls(
      vaal_models.VAE(latent_dim=int(v.latent_dim), width=int(v.width)),
      vaal_models.Discriminator(hidden=int(v.discriminator_hidden)),
      int(v.image_size),
      float(v.beta),
      float(v.adversary_weight),
      float(v.learning_rate),
      int(v.vae_steps),
      str(v.kl_reduction),
      str(v.batch_norm),
      str(v.score_batch_norm),
      str(v.normalise),
      str(v.flip),
    )

  def optimizer(self) -> optax.GradientTransformation:
    """Adam at the learning rate, for both the VAE and the discriminator."""
    return optax.adam(self.learning_rate)


class VaalState(flax.struct.PyTreeNode):
  """The VAE's and the discriminator's parameters, batch statistics and optimizer states."""

  vae_params: dict
  vae_stats: dict
  disc_params: dict
  vae_opt: optax.OptState
  disc_opt: optax.OptState


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """(B,) KL(N(mu, exp(logvar)) || N(0, I)) of (B, Z) posteriors."""
  return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


def vae_loss(
  x: jax.Array,
  reconstruction: jax.Array,
  mu: jax.Array,
  logvar: jax.Array,
  beta: float,
  kl_reduction: str,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(loss, MSE, KL): mean squared reconstruction error over every pixel + beta * KL, the KL
  summed ('sum') or averaged ('mean') over the batch."""
  mse = jnp.mean(jnp.square(reconstruction - x))
  kl = kl_divergence(mu, logvar)
  kl = jnp.sum(kl) if kl_reduction == "sum" else jnp.mean(kl)
  return mse + beta * kl, mse, kl


def bce(logits: jax.Array, target: float) -> jax.Array:
  """Mean binary cross-entropy of sigmoid(logits) (B,) against a constant 0/1 target."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def discriminator_loss(logits_labeled: jax.Array, logits_unlabeled: jax.Array) -> jax.Array:
  """BCE(D(mu_L), 1) + BCE(D(mu_U), 0)."""
  return bce(logits_labeled, 1.0) + bce(logits_unlabeled, 0.0)


def vae_images(
  data, index: jax.Array, preprocess: Preprocess, settings: Settings, flip: jax.Array | None = None
) -> jax.Array:
  """(B, size, size, C) float32: rows `index` (B,) normalised as `settings.normalise` says,
  mirrored left-right where the (B,) bool `flip` is True, resized bilinearly if needed."""
  images = data.images_at(index)
  if settings.normalise == "task":
    x = preprocess.normalise(images)
  else:  # the reference's Normalize(mean=0.5, std=0.5) of x in [0, 1]
    x = (images.astype(jnp.float32) / 255.0 - 0.5) / 0.5
  if flip is not None:
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
  size = settings.image_size
  if x.shape[1:3] != (size, size):
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear")
  return x


@functools.partial(jax.jit, static_argnames=("settings", "channels"))
def init_state(rng: jax.Array, settings: Settings, channels: int) -> VaalState:
  """Fresh networks (the reference's initialisers are PyTorch's; these are flax's) and
  fresh Adam states."""
  vae_rng, noise_rng, disc_rng = jax.random.split(rng, 3)
  image = jnp.zeros((1, settings.image_size, settings.image_size, channels), jnp.float32)
  variables = settings.vae.init(vae_rng, image, noise_rng)
  disc_params = settings.discriminator.init(
    disc_rng, jnp.zeros((1, settings.vae.latent_dim), jnp.float32)
  )["params"]
  tx = settings.optimizer()
  with jax.numpy_dtype_promotion("standard"):  # optax, as in train_chunk
    return VaalState(
      variables["params"],
      variables["batch_stats"],
      disc_params,
      tx.init(variables["params"]),
      tx.init(disc_params),
    )


def random_flips(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """bool `shape`: each True with probability 1/2, one key per entry (so a batch's draws do
  not depend on how it is split over the devices)."""
  keys = jax.random.split(rng, math.prod(shape))
  return jax.vmap(jax.random.bernoulli)(keys).reshape(shape)


def vae_passes(
  vae: vaal_models.VAE,
  params,
  stats,
  x_l: jax.Array,
  x_u: jax.Array,
  rng: jax.Array | None,
  batch_norm: str,
):
  """The VAE in train mode on a labeled and an unlabeled batch (B, S, S, C) each.

  'separate': one pass per batch, each standardised by its own statistics (the reference);
  'joint': one pass over both, one set of statistics. Returns (out_l, out_u, batch_stats):
  the VAE's outputs (reconstructions only with `rng`) and the updated running statistics.
  """

  def run(x, key, stats):
    out, updates = vae.apply(
      {"params": params, "batch_stats": stats}, x, key, train=True, mutable=["batch_stats"]
    )
    return out, updates["batch_stats"]

  key_l, key_u = (None, None) if rng is None else jax.random.split(rng)
  if batch_norm == "joint":
    out, stats = run(jnp.concatenate([x_l, x_u]), key_l, stats)
    split = x_l.shape[0]
    return (jax.tree.map(lambda v: v[:split], out), jax.tree.map(lambda v: v[split:], out), stats)
  out_l, stats = run(x_l, key_l, stats)  # running statistics: labeled, then unlabeled
  out_u, stats = run(x_u, key_u, stats)
  return out_l, out_u, stats


def _iteration(state: VaalState, inputs, *, data, preprocess: Preprocess, settings: Settings):
  """One VAAL iteration: `vae_steps` VAE updates, then one discriminator update.

  With `batch_norm='separate'` (the reference) each set is standardised on its own, which
  hides any difference in the sets' per-channel means and scales from the discriminator;
  'joint' standardises both together and keeps it. Scoring in train mode (the reference)
  standardises each scoring batch on its own as well. On a trivially separable pair of sets
  (tests/test_vaal.py, each set scored in its own batches) the discriminator's
  labeled-vs-unlabeled AUC was 0.60-0.81 over four seeds with the reference's settings, and
  1.0 for every seed when scoring used the running statistics (`score_batch_norm='running'`,
  with separate or joint statistics in training).
  """
  # (vae_steps, B) rows and flips: a batch per VAE step
  labeled_index, unlabeled_index, flip_l, flip_u, rng = inputs
  vae, disc, tx = settings.vae, settings.discriminator, settings.optimizer()

  def vae_objective(params, stats, key, x_l, x_u):
    out_l, out_u, stats = vae_passes(vae, params, stats, x_l, x_u, key, settings.batch_norm)
    loss_l, mse_l, kl_l = vae_loss(
      x_l,
      out_l["reconstruction"],
      out_l["mu"],
      out_l["logvar"],
      settings.beta,
      settings.kl_reduction,
    )
    loss_u, mse_u, kl_u = vae_loss(
      x_u,
      out_u["reconstruction"],
      out_u["mu"],
      out_u["logvar"],
      settings.beta,
      settings.kl_reduction,
    )
    d = {"params": state.disc_params}
    adversarial = bce(disc.apply(d, out_l["mu"]), 1.0) + bce(disc.apply(d, out_u["mu"]), 1.0)
    total = loss_l + loss_u + settings.adversary_weight * adversarial
    return total, (
      stats,
      {
        "vae_loss": total,
        "reconstruction": 0.5 * (mse_l + mse_u),
        "kl": 0.5 * (kl_l + kl_u),
        "adversarial": adversarial,
      },
    )

  def vae_step(carry, step_inputs):
    params, stats, opt = carry
    key, rows_l, rows_u, fl_l, fl_u = step_inputs
    x_l = vae_images(data, rows_l, preprocess, settings, fl_l)
    x_u = vae_images(data, rows_u, preprocess, settings, fl_u)
    (_, (stats, metrics)), grads = jax.value_and_grad(vae_objective, has_aux=True)(
      params, stats, key, x_l, x_u
    )
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), stats, opt), metrics

  # A scan, not a Python loop: the step compiles once, not vae_steps times.
  (params, stats, opt), metrics = jax.lax.scan(
    vae_step,
    (state.vae_params, state.vae_stats, state.vae_opt),
    (jax.random.split(rng, settings.vae_steps), labeled_index, unlabeled_index, flip_l, flip_u),
  )
  metrics = jax.tree.map(lambda x: x[-1], metrics)
  # the discriminator learns on the last VAE step's images (flips included), as the
  # reference's loop leaves them, encoded in train mode as there
  x_l = vae_images(data, labeled_index[-1], preprocess, settings, flip_l[-1])
  x_u = vae_images(data, unlabeled_index[-1], preprocess, settings, flip_u[-1])
  out_l, out_u, stats = vae_passes(vae, params, stats, x_l, x_u, None, settings.batch_norm)
  mu_l, mu_u = jax.lax.stop_gradient(out_l["mu"]), jax.lax.stop_gradient(out_u["mu"])
  d_loss, d_grads = jax.value_and_grad(
    lambda p: discriminator_loss(disc.apply({"params": p}, mu_l), disc.apply({"params": p}, mu_u))
  )(state.disc_params)
  d_updates, disc_opt = tx.update(d_grads, state.disc_opt, state.disc_params)
  state = VaalState(params, stats, optax.apply_updates(state.disc_params, d_updates), opt, disc_opt)
  return state, {**metrics, "discriminator_loss": d_loss}


@functools.partial(jax.jit, static_argnames=("preprocess", "settings"), donate_argnums=0)
def train_chunk(
  state: VaalState,
  data,
  labeled_index: jax.Array,
  unlabeled_index: jax.Array,
  rng: jax.Array,
  *,
  preprocess: Preprocess,
  settings: Settings,
):
  """T iterations in one lax.scan.

  labeled_index, unlabeled_index: (T, vae_steps, B) int32 training-set rows per iteration
    and VAE step.
  Returns the new state and a dict of (T,) float32 losses per iteration.
  """
  step = functools.partial(_iteration, data=data, preprocess=preprocess, settings=settings)
  flip_rng, rng = jax.random.split(rng)
  keys = jax.random.split(rng, labeled_index.shape[0])
  if settings.flip == "none":
    flip_l = flip_u = jnp.zeros(labeled_index.shape, bool)
  else:
    flip_l, flip_u = random_flips(flip_rng, (2,) + labeled_index.shape)
  # optax's Adam mixes Python scalars with int32 step counts, which the strict dtype-promotion
  # mode (our tests run in it) refuses; standard promotion is what it is written for.
  with jax.numpy_dtype_promotion("standard"):
    return jax.lax.scan(step, state, (labeled_index, unlabeled_index, flip_l, flip_u, keys))


@functools.partial(jax.jit, static_argnames=("preprocess", "settings"))
def discriminator_logits(
  state: VaalState, data, batch, *, preprocess: Preprocess, settings: Settings
) -> jax.Array:
  """(B,) float32 logits of D(mu(x)) for rows `batch['index']` (B,) int32.

  `batch` may hold 'flip' (B,) bool (images to mirror) and 'valid' (B,) bool (the real rows
  of a padded batch). With `score_batch_norm='batch'` the VAE runs in train mode, as the
  reference's scoring: BatchNorm standardises by the statistics of the batch's valid rows
  (all rows without 'valid'); with 'running', in eval mode.
  """
  x = vae_images(data, batch["index"], preprocess, settings, batch.get("flip"))
  variables = {"params": state.vae_params, "batch_stats": state.vae_stats}
  if settings.score_batch_norm == "batch":
    out, _ = settings.vae.apply(
      variables, x, train=True, mask=batch.get("valid"), mutable=["batch_stats"]
    )
  else:
    out = settings.vae.apply(variables, x)
  return settings.discriminator.apply({"params": state.disc_params}, out["mu"])


def pool_logits(ctx: ScoringContext, state: VaalState) -> np.ndarray:
  """(P,) float64 logits D(mu(x)) of ctx.candidates.

  As the reference's scoring loader: the candidates in a random order, in batches of
  `vaal.batch_size` (the last one shorter: its padding is masked out of BatchNorm's
  statistics), each image flipped at random with `vaal.flip='all'`.
  """
  settings = Settings.from_config(ctx.config)
  draw = np.random.default_rng(
    np.asarray(jax.random.key_data(jax.random.fold_in(ctx.rng, SCORE_STREAM)))
  )
  count = len(ctx.candidates)
  order = draw.permutation(count)
  extra = {"valid": np.ones(count, bool)}
  if settings.flip == "all":
    extra["flip"] = draw.random(count) < 0.5
  fn = functools.partial(discriminator_logits, preprocess=ctx.data.preprocess, settings=settings)
  # the run's pool capacity: the same shapes every cycle, so nothing compiles again
  shuffled = sharding.fetch(
    map_rows(
      ctx,
      fn,
      state,
      ctx.candidates[order],
      pool_capacity(ctx),
      batch_size=int(ctx.config.vaal.batch_size),
      extra=extra,
    )
  )
  logits = np.empty(count)
  logits[order] = shuffled[:count]
  return logits


def iteration_batches(
  rng: np.random.Generator, rows: np.ndarray, batch_size: int, iterations: int
) -> np.ndarray:
  """(iterations, batch_size) int32: shuffled passes over `rows`, as many as needed."""
  passes, have = [], 0
  while have < iterations:
    passes.append(epoch_batches(rng, rows, batch_size)[0])
    have += len(passes[-1])
  return np.concatenate(passes)[:iterations]


def check_losses(
  losses: dict[str, np.ndarray],
  first_iteration: int,
  total: int,
  cycle: int,
  config: ml_collections.ConfigDict,
) -> None:
  """Raises VaalDiverged at the first iteration with a non-finite loss or a reconstruction
  error above vaal.max_loss; `losses` hold (T,) values from iteration `first_iteration`."""
  v = config.vaal
  bad = np.zeros_like(losses["reconstruction"], bool)
  for values in losses.values():
    bad |= ~np.isfinite(values)
  bad |= losses["reconstruction"] > v.max_loss
  if bad.any():
    at = int(np.argmax(bad))
    values = ", ".join(f"{k} {float(x[at]):.4g}" for k, x in sorted(losses.items()))
    raise VaalDiverged(
      f"VAAL diverged in cycle {cycle} at iteration {first_iteration + at + 1} of {total} "
      f"({values}; the limit on the reconstruction error is vaal.max_loss={v.max_loss}). "
      "The cycle's trained model is kept in the run's checkpoints: rerunning the same "
      "command with a higher --config.vaal.max_loss resumes at this scoring. Otherwise lower "
      f"vaal.learning_rate (now {v.learning_rate}) or vaal.image_size (now {v.image_size}) "
      "and rerun in a new --workdir (or with --force, which discards this run)."
    )


def num_iterations(config: ml_collections.ConfigDict, num_labeled: int, num_train: int) -> int:
  """VAAL iterations per cycle: `epochs` passes of `batch_size` over the whole training set
  (`iterations_per='train_set'`, the reference's num_images * train_epochs // batch_size:
  39,062 for CIFAR-10) or over the labeled set ('labeled'); at least one."""
  v = config.vaal
  images = num_train if v.iterations_per == "train_set" else num_labeled
  return max(1, int(v.epochs) * images // int(v.batch_size))


def train(ctx: ScoringContext) -> tuple[VaalState, dict[str, np.ndarray]]:
  """Trains a fresh VAE and discriminator on ctx.labeled and ctx.candidates.

  Returns the trained state and every iteration's losses (host arrays, (iterations,)).
  """
  v = ctx.config.vaal
  settings = Settings.from_config(ctx.config)
  data = ctx.data
  init_rng, noise_rng, order_rng = jax.random.split(ctx.rng, 3)
  state = sharding.put_replicated(
    init_state(init_rng, settings, int(data.dataset.image_shape[-1])), data.mesh
  )
  chunk = int(v.steps_per_call)
  iterations = (
    math.ceil(num_iterations(ctx.config, len(ctx.labeled), len(data.dataset.train_labels)) / chunk)
    * chunk
  )
  order = np.random.default_rng(np.asarray(jax.random.key_data(order_rng)))
  shape = (iterations, settings.vae_steps, int(v.batch_size))
  labeled = iteration_batches(order, ctx.labeled, shape[-1], shape[0] * shape[1]).reshape(shape)
  unlabeled = iteration_batches(order, ctx.candidates, shape[-1], shape[0] * shape[1]).reshape(
    shape
  )
  split = jax.sharding.NamedSharding(
    data.mesh, jax.sharding.PartitionSpec(None, None, sharding.DATA_AXIS)
  )
  history: dict[str, list[np.ndarray]] = {}
  for call, start in enumerate(range(0, iterations, chunk)):
    labeled_chunk, unlabeled_chunk = (
      labeled[start : start + chunk],
      unlabeled[start : start + chunk],
    )
    window = data.train_data.window(
      np.concatenate([labeled_chunk.ravel(), unlabeled_chunk.ravel()])
    )
    state, losses = train_chunk(
      state,
      window,
      jax.device_put(labeled_chunk, split),
      jax.device_put(unlabeled_chunk, split),
      jax.random.fold_in(noise_rng, call),
      preprocess=data.preprocess,
      settings=settings,
    )
    losses = {k: np.asarray(x) for k, x in jax.device_get(losses).items()}
    check_losses(losses, start, iterations, ctx.cycle, ctx.config)
    for key, values in losses.items():
      history.setdefault(key, []).append(values)
  return state, {k: np.concatenate(x) for k, x in history.items()}


def score(ctx: ScoringContext) -> np.ndarray:
  """(P,) float64 -logit D(mu(x)) of ctx.candidates: the top-k are the least "labeled"."""
  state, _ = train(ctx)
  logits = pool_logits(ctx, state)
  if not np.all(np.isfinite(logits)):
    raise VaalDiverged(
      f"VAAL's discriminator gave {int(np.sum(~np.isfinite(logits)))} "
      f"non-finite scores in cycle {ctx.cycle}; lower vaal.learning_rate "
      f"(now {ctx.config.vaal.learning_rate})"
    )
  return -logits


KL_REDUCTIONS = ("sum", "mean")
BATCH_NORMS = ("separate", "joint")
SCORE_BATCH_NORMS = ("batch", "running")
NORMALISATIONS = ("half", "task")
FLIPS = ("all", "train", "none")


def defaults() -> ml_collections.ConfigDict:
  """The vaal config section's defaults."""
  s = ml_collections.ConfigDict()
  s.latent_dim = 32  # VAE latent size
  s.width = 128  # encoder channels width, 2, 4, 8 x width (the reference's 128 ... 1024)
  s.discriminator_hidden = 512  # z -> hidden -> hidden -> 1
  s.image_size = 32  # images are resized to it on device; a positive multiple of 16
  s.beta = 1.0  # of the KL term
  s.adversary_weight = 1.0  # of the VAE's "fool the discriminator" term
  s.kl_reduction = "sum"  # over the batch: 'sum' (the reference) or 'mean'
  s.batch_norm = "separate"  # training: a pass (statistics) per set, the reference's; 'joint'
  s.score_batch_norm = "batch"  # scoring: each batch's statistics (the reference); 'running'
  s.normalise = "half"  # 'half': (x - 0.5) / 0.5, the reference's; 'task': the task model's
  s.flip = "all"  # random flips of 'all' images (the reference: scoring's too), 'train', 'none'
  s.learning_rate = 5e-4  # Adam, VAE and discriminator
  s.vae_steps = 2  # VAE steps per discriminator step
  s.epochs = 100  # passes of batch_size over the set below
  # 'train_set': iterations = epochs x training-set size / batch_size (the reference's);
  # 'labeled': epochs x labeled-set size / batch_size (about 10x fewer at small budgets).
  s.iterations_per = "train_set"
  s.batch_size = 128  # labeled and unlabeled images per iteration, each; pool per scoring batch
  s.steps_per_call = 50  # iterations per jitted call; the losses are checked between calls
  s.max_loss = 1e4  # a reconstruction error above it counts as divergence
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the vaal section's values are invalid."""
  va = config.vaal
  check_value(
    va.iterations_per in ("train_set", "labeled"),
    "vaal.iterations_per",
    va.iterations_per,
    "'train_set' or 'labeled'",
  )
  for key in (
    "latent_dim",
    "width",
    "discriminator_hidden",
    "vae_steps",
    "epochs",
    "steps_per_call",
  ):
    check_value(va[key] >= 1, f"vaal.{key}", va[key], "an integer >= 1")
  check_value(
    va.image_size >= 16 and va.image_size % 16 == 0,
    "vaal.image_size",
    va.image_size,
    "a positive multiple of 16 (four stride-2 convolutions)",
  )
  for key, allowed in (
    ("kl_reduction", KL_REDUCTIONS),
    ("batch_norm", BATCH_NORMS),
    ("score_batch_norm", SCORE_BATCH_NORMS),
    ("normalise", NORMALISATIONS),
    ("flip", FLIPS),
  ):
    check_value(va[key] in allowed, f"vaal.{key}", va[key], f"one of {allowed}")
  for key in ("beta", "adversary_weight"):
    check_value(va[key] >= 0, f"vaal.{key}", va[key], ">= 0")
  check_value(va.learning_rate > 0, "vaal.learning_rate", va.learning_rate, "> 0")
  check_value(va.max_loss > 0, "vaal.max_loss", va.max_loss, "> 0")
  check_value(
    va.batch_size >= 1 and va.batch_size % num_devices == 0,
    "vaal.batch_size",
    va.batch_size,
    f"a positive multiple of the device count ({num_devices})",
  )


STRATEGY = Strategy(
  name="vaal",
  record="none",
  score=score,
  description="VAAL: the unlabeled samples a VAE-latent discriminator finds "
  "least like the labeled set",
  segmentation=True,
  # max_loss only decides whether to stop: a run resumes with it raised
  config_section=ConfigSection("vaal", defaults, check, resume_safe=("max_loss",)),
)
