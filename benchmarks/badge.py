"""BADGE's selection at pool scale: device memory and time against its materialised form.

  python -m benchmarks.badge [--pool=50000] [--classes=100] [--dim=512] [--picks=2500]

Random factors u (P, C) and a (P, D + 1) stand in for a trained model's (the selection's
cost does not depend on their values). The gradient embeddings g = u (x) a would take
P x C x (D + 1) float32 (10.3 GB at the defaults); `badge.kmeans_pp` keeps only the factors
and (P,) vectors. Prints the bytes of the factors, the compiled selection's temporary bytes
(XLA's memory analysis), the process's peak RSS, the seconds of the k picks, and the
materialised size; writes <out>/badge.json.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings
from disal_jax.strategies import badge

_POOL = flags.DEFINE_integer("pool", 50_000, "Candidates P.")
_CLASSES = flags.DEFINE_integer("classes", 100, "Classes C.")
_DIM = flags.DEFINE_integer("dim", 512, "Penultimate feature size D (the bias adds one).")
_PICKS = flags.DEFINE_integer("picks", 2500, "Picks k (5% of a 50,000-image training set).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write badge.json.")


def main(argv):
  del argv
  pool, classes, dim, k = _POOL.value, _CLASSES.value, _DIM.value + 1, _PICKS.value
  ku, ka = jax.random.split(jax.random.key(0))
  u = jax.nn.softmax(jax.random.normal(ku, (pool, classes)), axis=-1)
  u = u - jax.nn.one_hot(jnp.argmax(u, axis=-1), classes)
  a = jax.random.normal(ka, (pool, dim))
  uniforms = badge.draw_uniforms(jax.random.key(1), k)
  compiled = badge.kmeans_pp.lower(u, a, uniforms, k).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  jax.block_until_ready(compiled(u, a, uniforms))  # warm
  seconds = common.timed(lambda: compiled(u, a, uniforms))
  factor_bytes = (u.size + a.size) * 4
  materialised = pool * classes * dim * 4
  figures = {
    "factor_bytes": factor_bytes,
    "selection_temp_bytes": temp,
    "materialised_bytes": materialised,
    "peak_rss_mib": common.peak_rss_mib(),
    "seconds": seconds,
  }
  print(
    f"\nBADGE selection: P={pool}, C={classes}, D'={dim}, k={k}, "
    f"{jax.device_count()} {jax.default_backend()} device(s)\n"
  )
  print(
    common.table(
      ["quantity", "value"],
      [
        ["factors u, a on device (MiB)", factor_bytes / 2**20],
        ["selection temporaries (MiB)", temp / 2**20],
        ["process peak RSS (MiB)", figures["peak_rss_mib"]],
        ["materialised embeddings (MiB)", materialised / 2**20],
        [f"{k} picks (s)", seconds],
      ],
    )
  )
  print(f"\nmaterialised / held = {materialised / (factor_bytes + temp):.0f}x")
  path = common.write_json(
    "badge",
    {"pool": pool, "classes": classes, "dim": dim, "picks": k, "figures": {"kmeans_pp": figures}},
    _OUT.value,
  )
  print(f"wrote {path}")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)
