"""Multi-host runs: JAX's own multi-controller runtime (jax.distributed), nothing home-made.

Every process runs the same program on the same config: the same host-side decisions (batch
order, labeled set, selections) from the same seeds, and the same jitted computations over a
global mesh of all hosts' devices. Each process holds its own devices' shards; reading a
sharded array on a host gathers it from every process (`sharding.fetch`), and only the
primary process (index 0) writes results files. Orbax checkpoints are written by all
processes together, as orbax expects.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import jax
from absl import flags
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def initialize(
  coordinator_address: str = "",
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
) -> None:
  """Joins the processes of one run. With no arguments, JAX reads them from the cluster it
  runs in (TPU VM pods, SLURM, Open MPI); on CPU the collectives go through gloo."""
  # Only the CPU backend reads this; without it, CPU devices of different processes cannot
  # run collectives. It must be set before the backend starts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address or None, num_processes, process_id)
  log.info(
    "process %d of %d: %d local device(s), %d in all",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def is_primary() -> bool:
  """Whether this process writes results (process 0; always true on one host)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (a no-op on one host)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


@dataclasses.dataclass(frozen=True)
class Flags:
  """The command-line flags of a multi-host run (main and sweep define the same ones)."""

  distributed: flags.FlagHolder
  coordinator_address: flags.FlagHolder
  num_processes: flags.FlagHolder
  process_id: flags.FlagHolder

  def initialize(self) -> None:
    """Joins the run when --distributed is given; otherwise a no-op."""
    if self.distributed.value:
      initialize(self.coordinator_address.value, self.num_processes.value, self.process_id.value)


def define_flags() -> Flags:
  """Defines --distributed, --coordinator_address, --num_processes and --process_id."""
  return Flags(
    flags.DEFINE_bool(
      "distributed",
      False,
      "Join a multi-host run through jax.distributed (every host runs the same command).",
    ),
    flags.DEFINE_string(
      "coordinator_address", "", "host:port of process 0 ('' = from the TPU/SLURM/MPI environment)."
    ),
    flags.DEFINE_integer(
      "num_processes", None, "Processes in the run (default: from the environment)."
    ),
    flags.DEFINE_integer(
      "process_id", None, "This process's index (default: from the environment)."
    ),
  )
