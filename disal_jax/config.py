"""The experiment-wide knobs, with their defaults, and their checks.

Every key an experiment has whichever strategies it runs (seed, data, model, train, augment,
checkpoint, al, record, per_sample) is defined here, once, with its comment; each strategy's
own section is defined in its module. `disal_jax.experiment` builds the whole config from
both (`base_config()`, where config files in `configs/` start) and checks it (`validate()`).
This module sits below the strategies, models and data registries and imports none of them.
"""

from __future__ import annotations

import ml_collections

# Also importable from here, where config files and callers look for them.
from disal_jax.errors import ConfigError as ConfigError
from disal_jax.errors import check_value as check_value

RECORD_KEEPS = ("auto", "none", "mean")
RECORD_WEIGHTINGS = ("mean", "ema", "lr")
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine")  # disal_jax.training.schedule
DTYPES = ("float32", "bfloat16")
PER_SAMPLE_ENGINES = ("one_pass", "vmap")
AL_PROTOCOLS = ("unified", "reference")  # disal_jax.protocol


def common_config() -> ml_collections.ConfigDict:
  """The experiment-wide keys at their defaults: the paper's CIFAR protocol on ResNet-18
  (docs/method.md), DISAL vs Random. No strategy's section: `experiment.base_config()` adds
  them."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # the initial labeled set, weights, batch order and scoring randomness
  # Comma-separated strategy names (see `disal_jax.strategies.registry.names()`); each
  # strategy runs in its own sub-folder of the workdir.
  c.strategies = "disal,random"
  # Also train once on 100% of the labels: the upper line of every plot.
  c.full_training = True

  c.data = d = ml_collections.ConfigDict()
  d.name = "cifar10"  # see disal_jax.data.registry.names()
  d.data_dir = ""  # tfds data_dir, or the image folder root for name='image_folder'
  d.manual_dir = ""  # tfds manual_dir (ImageNet100, Cityscapes)
  d.cache_dir = ""  # decoded-array cache; '' = ~/.cache/disal_jax
  # Long-tailed variant: keep n_max * (1/ratio)^(c/(C-1)) training images of class c.
  d.imbalance_ratio = 0.0  # 0 = balanced
  d.image_size = 0  # resize to image_size x image_size at load time; 0 = keep
  # > 0: resize the shorter side to crop_from, then centre-crop image_size (256 -> 224, the
  # ImageNet recipe); 0 = stretch to image_size x image_size.
  d.crop_from = 0
  d.downscale = 1  # cityscapes: shrink images and label maps by this factor at load time
  d.test_fraction = 0.2  # for datasets without a test split (digits, caltech101)
  d.split_seed = 0  # fixed train/test split of those datasets, and of the validation split
  # Carve this stratified fraction of the training split out as a labeled validation set
  # (before imbalance_ratio and max_train): never in the pool, evaluated every cycle beside the
  # test set. Choose hyper-parameters on it, never on the test set. 0 = no validation set.
  d.val_fraction = 0.0
  d.max_train = 0  # keep a random N training images (seeded by split_seed); 0 = all
  d.max_test = 0  # likewise for the test split
  d.max_train_per_class = 0  # tfds datasets: keep at most N training images per class; 0 = all
  # Where the splits live while training (disal_jax.training.placement): 'device' (whole on
  # every device), 'stream' (a row store in the cache; each step's rows read by the host), or
  # 'auto' ('device' while the splits fit device_budget_mb, else 'stream').
  d.placement = "auto"
  d.device_budget_mb = 4096  # per device, for the splits under placement='auto'
  # name='shapes': the synthetic segmentation set (disal_jax.data.shapes), seeded by split_seed.
  d.shapes = sh = ml_collections.ConfigDict()
  sh.num_train = 600  # training images
  sh.num_test = 150  # test images
  sh.size = 64  # images are size x size
  sh.max_shapes = 4  # shapes per image: 1 to max_shapes

  c.model = m = ml_collections.ConfigDict()
  m.name = "resnet18"  # see disal_jax.models.registry.names()
  m.stem = "cifar"  # 'cifar' (3x3 stride 1, no max-pool) or 'imagenet' (7x7 stride 2 + max-pool)
  m.width = 64  # channels of the first stage; 64 is the standard ResNet-18
  m.dtype = "float32"  # compute dtype; parameters stay float32
  # Start every cycle's model from this Flax msgpack checkpoint ({'params', 'batch_stats'};
  # arrays that do not match, e.g. another class count's head, stay fresh). '' = from scratch.
  m.init_from = ""
  # Dropout on the pooled feature before the head, in MC-Dropout's passes (and in training if
  # train_dropout). 0 = none; the mc_dropout strategy sets both for its own runs.
  m.dropout_rate = 0.0
  m.train_dropout = True  # dropout also in the train step (False: only at query time)

  c.train = t = ml_collections.ConfigDict()
  t.epochs = 200  # per cycle
  # At least this many optimizer steps per cycle: an epoch then makes several passes over a
  # small labeled set (the lr schedule, record and checkpoints still count epochs). 0 = off.
  t.min_steps = 0
  t.batch_size = 128  # labeled images per step
  t.eval_batch_size = 500  # images per evaluation, recording and scoring call
  t.optimizer = "sgd"  # or 'adam'
  t.learning_rate = 0.1  # initial (after a warmup: its peak)
  t.momentum = 0.9  # SGD
  t.weight_decay = 5e-4  # added to the gradient (PyTorch's SGD semantics)
  # The learning rate over a cycle's optimizer steps (disal_jax.training.schedule): 'step'
  # (learning_rate, times lr_decay_factor from epoch int(lr_decay_at * epochs) on) or 'cosine'
  # (from learning_rate down to 0 at the cycle's end).
  t.lr_schedule = "step"
  t.lr_decay_at = 0.8  # 'step': fraction of the epochs after which lr is x lr_decay_factor
  t.lr_decay_factor = 0.1  # 'step': lr multiplier after lr_decay_at
  # Linear warmup from 0 to learning_rate over this fraction of a cycle's steps; the schedule
  # takes over after it ('step' at its own epochs, 'cosine' over the rest). 0 = none.
  t.warmup_fraction = 0.0
  t.warm_start = False  # start each cycle from the previous cycle's model
  t.log_every_epochs = 1  # a progress line every this many epochs

  c.augment = a = ml_collections.ConfigDict()
  a.crop_padding = 4  # random crop to the image size after zero-padding; 0 = off
  a.flip = True  # random horizontal flip
  # Segmentation: (height, width) of the random training crop of image and label map, taken
  # without padding (Cityscapes: 688 x 688); (0, 0) trains on whole images.
  a.crop_size = (0, 0)

  c.checkpoint = ck = ml_collections.ConfigDict()
  # Orbax checkpoints under <workdir>/<strategy>/seed_<s>/checkpoints: every N epochs, at the
  # end of each cycle's training and after each selection; a rerun resumes from the newest.
  ck.every_epochs = 10
  ck.keep = 3  # the newest N are kept

  c.al = al = ml_collections.ConfigDict()
  al.initial_fraction = 0.10  # of the training split labeled at random before cycle 0
  al.step_fraction = 0.05  # labeled after each cycle
  al.final_fraction = 0.40  # the last cycle's labeled share
  # Absolute counts (the imbalanced settings); when initial_count > 0 they replace fractions.
  al.initial_count = 0
  al.step_count = 0
  al.final_count = 0
  # Score a random subset of this many unlabeled samples per cycle (references: 10000);
  # 0 = score the whole pool.
  al.subset_size = 0
  # 'unified': every strategy scores and trains as the keys above and train.warm_start say;
  # 'reference': each strategy with its published code's scored subset and warm start
  # (Strategy.reference; docs/strategies.md lists the values and their sources).
  al.protocol = "unified"

  c.record = r = ml_collections.ConfigDict()
  # What to keep of the pool's per-epoch probabilities: 'auto' = what the strategy declares.
  r.keep = "auto"
  # How DISAL's target p_bar folds a sample's predictions: 'mean' (arithmetic), 'ema'
  # (decay below, bias-corrected as in temporal ensembling: sum_k (1-a) a^(n-k) p_k / (1-a^n)),
  # 'lr' (weighted by the learning rate, TracIn's eta_t: an epoch's, that of its last step;
  # a train-branch fold's, that of its step).
  r.weighting = "ema"
  r.ema_decay = 0.6  # temporal ensembling's
  # Epochs before this one are not folded into p_bar (the first, near-random predictions).
  r.start_epoch = 0
  # Segmentation: probabilities are recorded (and pixel scores taken) on stride x stride
  # block means of the logits, so the pool buffers hold (H/stride) x (W/stride) x C floats
  # per image (Cityscapes at 16: 64 x 128 x 19, 0.6 MB).
  r.pixel_stride = 8

  # Per-sample gradient norms and Gram matrices (gradnorm, TracInCP 'all', DISAL score='norm').
  c.per_sample = ps = ml_collections.ConfigDict()
  # 'one_pass': exact, from one batched forward + backward pass (strategies/one_pass.py);
  # 'vmap': jax.vmap(jax.grad), the reference (any model; slower).
  ps.engine = "one_pass"
  # one_pass: samples per jitted call with one cotangent each; a C-class Gram (expected
  # gradnorm, TracInCP) holds C per sample, so it takes max(1, batch_size // C) samples.
  ps.batch_size = 64
  ps.samples_per_step = 2  # one_pass: samples per step of the per-layer loop (cache-sized)
  # > 0: samples per call are instead the most whose compiled memory (XLA's temporaries and
  # outputs, per device) fits this many MiB, measured for each scorer (base.fit_batch_size).
  ps.memory_budget_mb = 0.0
  return c


def strategy_names(config: ml_collections.ConfigDict) -> list[str]:
  """The names in config.strategies, in order ('disal, random' -> ['disal', 'random'])."""
  return [s.strip() for s in config.strategies.split(",") if s.strip()]


_check = check_value


def validate_common(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Checks the experiment-wide values (not the names the registries resolve, nor the
  strategies' sections: `experiment.validate` checks all); raises ConfigError naming the key
  and what is allowed."""
  _check(
    config.model.stem in ("cifar", "imagenet"),
    "model.stem",
    config.model.stem,
    "'cifar' or 'imagenet'",
  )
  _check(config.model.width > 0, "model.width", config.model.width, "a positive integer")
  _check(config.model.dtype in DTYPES, "model.dtype", config.model.dtype, f"one of {DTYPES}")
  _check(
    config.data.imbalance_ratio == 0 or config.data.imbalance_ratio >= 1,
    "data.imbalance_ratio",
    config.data.imbalance_ratio,
    "0 (off) or >= 1",
  )
  _check(
    0 < config.data.test_fraction < 1, "data.test_fraction", config.data.test_fraction, "in (0, 1)"
  )
  _check(config.data.downscale >= 1, "data.downscale", config.data.downscale, "an integer >= 1")
  _check(
    config.data.crop_from == 0 or config.data.crop_from >= config.data.image_size > 0,
    "data.crop_from",
    config.data.crop_from,
    "0 (stretch), or at least data.image_size (which must then be set)",
  )

  t = config.train
  _check(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
  _check(t.min_steps >= 0, "train.min_steps", t.min_steps, "0 (off) or a positive count")
  _check(
    config.data.placement in ("auto", "device", "stream"),
    "data.placement",
    config.data.placement,
    "'auto', 'device' or 'stream'",
  )
  _check(
    config.data.device_budget_mb > 0,
    "data.device_budget_mb",
    config.data.device_budget_mb,
    "a positive number of MiB",
  )
  _check(
    0 <= config.data.val_fraction < 1,
    "data.val_fraction",
    config.data.val_fraction,
    "in [0, 1) (0 = no validation split)",
  )
  for key in ("batch_size", "eval_batch_size"):
    value = t[key]
    _check(
      value >= 1 and value % num_devices == 0,
      f"train.{key}",
      value,
      f"a positive multiple of the device count ({num_devices})",
    )
  _check(t.optimizer in OPTIMIZERS, "train.optimizer", t.optimizer, f"one of {OPTIMIZERS}")
  _check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "> 0")
  _check(0 <= t.momentum < 1, "train.momentum", t.momentum, "in [0, 1)")
  _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0")
  _check(
    t.lr_schedule in LR_SCHEDULES, "train.lr_schedule", t.lr_schedule, f"one of {LR_SCHEDULES}"
  )
  _check(0 < t.lr_decay_at <= 1, "train.lr_decay_at", t.lr_decay_at, "in (0, 1]")
  _check(
    0 <= t.warmup_fraction < 1,
    "train.warmup_fraction",
    t.warmup_fraction,
    "in [0, 1) (0 = no warmup)",
  )
  _check(t.log_every_epochs >= 1, "train.log_every_epochs", t.log_every_epochs, ">= 1")
  _check(
    config.checkpoint.every_epochs >= 0,
    "checkpoint.every_epochs",
    config.checkpoint.every_epochs,
    "0 (only at cycle ends) or a positive integer",
  )
  _check(
    config.checkpoint.keep >= 2,
    "checkpoint.keep",
    config.checkpoint.keep,
    ">= 2 (a corrupt newest checkpoint falls back to the one before)",
  )
  _check(
    config.augment.crop_padding >= 0, "augment.crop_padding", config.augment.crop_padding, ">= 0"
  )
  crop = tuple(config.augment.crop_size)
  _check(
    len(crop) == 2 and (crop == (0, 0) or min(crop) > 0),
    "augment.crop_size",
    crop,
    "(height, width) of positive integers, or (0, 0) for whole images",
  )

  al = config.al
  if al.initial_count > 0:
    _check(al.step_count > 0, "al.step_count", al.step_count, "> 0 when al.initial_count is set")
    _check(
      al.final_count >= al.initial_count,
      "al.final_count",
      al.final_count,
      f">= al.initial_count ({al.initial_count})",
    )
  else:
    for key in ("initial_fraction", "step_fraction", "final_fraction"):
      _check(0 < al[key] <= 1, f"al.{key}", al[key], "a fraction in (0, 1]")
    _check(
      al.final_fraction >= al.initial_fraction,
      "al.final_fraction",
      al.final_fraction,
      f">= al.initial_fraction ({al.initial_fraction})",
    )
  _check(al.subset_size >= 0, "al.subset_size", al.subset_size, "0 (off) or a positive count")
  _check(al.protocol in AL_PROTOCOLS, "al.protocol", al.protocol, f"one of {AL_PROTOCOLS}")

  r = config.record
  _check(r.keep in RECORD_KEEPS, "record.keep", r.keep, f"one of {RECORD_KEEPS}")
  _check(
    r.weighting in RECORD_WEIGHTINGS, "record.weighting", r.weighting, f"one of {RECORD_WEIGHTINGS}"
  )
  _check(0 <= r.ema_decay < 1, "record.ema_decay", r.ema_decay, "in [0, 1)")
  _check(r.pixel_stride >= 1, "record.pixel_stride", r.pixel_stride, "an integer >= 1")
  _check(
    0 <= r.start_epoch < t.epochs,
    "record.start_epoch",
    r.start_epoch,
    f"in [0, train.epochs) = [0, {t.epochs})",
  )

  _check(
    0 <= config.model.dropout_rate < 1, "model.dropout_rate", config.model.dropout_rate, "in [0, 1)"
  )
  ps = config.per_sample
  _check(
    ps.engine in PER_SAMPLE_ENGINES, "per_sample.engine", ps.engine, f"one of {PER_SAMPLE_ENGINES}"
  )
  _check(ps.batch_size >= 1, "per_sample.batch_size", ps.batch_size, ">= 1")
  _check(ps.samples_per_step >= 1, "per_sample.samples_per_step", ps.samples_per_step, ">= 1")
  _check(
    ps.memory_budget_mb >= 0,
    "per_sample.memory_budget_mb",
    ps.memory_budget_mb,
    "0 (fixed chunk sizes) or a positive number of MiB",
  )


# The names that moved to disal_jax.experiment (they need the registries, which sit above this
# module): importing one from here says where it is now, instead of a bare ImportError.
_MOVED = ("base_config", "validate", "validate_for_dataset")


def __getattr__(name: str):
  if name in _MOVED:
    raise ImportError(
      f"disal_jax.config.{name} is now disal_jax.experiment.{name} (it adds the "
      f"strategies' sections); use `from disal_jax.experiment import {name}`",
      name=__name__,
    )
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
