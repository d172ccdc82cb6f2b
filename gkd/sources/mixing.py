"""The coins that pick batch sources, and the per-row assembly of a mixed batch.

As in the GKD paper (Agarwal et al., 2024, Alg. 1) the source is drawn once per *step*: with
probability λ = mix.student the batch is the student's own samples (on-policy), with
mix.teacher it is teacher-generated (sequence-level KD), else the dataset's responses.
The coin comes from a key derived from (seed, step), so every host draws the same branch and a
resumed run repeats it exactly.

`mix.per_example=True` draws the source per *row* instead: row r of step s takes its source
from fold_in(fold_in(key(seed), s), r), the same on every host, and the batch is assembled
from the sources row by row. The fractions then hold within each batch (in expectation) rather
than across steps, at a price: a step whose rows need both sampled sources runs the student's
and the teacher's sampler over the whole batch (sampling is one fixed-shape program; rows are
selected afterwards). Which sources exist is gkd.sources' registry; this module only draws.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _step_key(seed: int, step: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed ^ 0x6B64), step)  # salt: not the init/sampling key


def step_uniform(seed: int, step: int) -> float:
  """The step's uniform draw in [0, 1), from fold_in(key(seed), step): the same everywhere."""
  return float(jax.random.uniform(_step_key(seed, step)))


def row_uniforms(seed: int, step: int, num_rows: int) -> np.ndarray:
  """f32[num_rows]: row r's draw from fold_in(step key, r), so a row's draw does not depend on
  the batch size or on how the rows are split over hosts."""
  keys = jax.vmap(lambda r: jax.random.fold_in(_step_key(seed, step), r))(jnp.arange(num_rows))
  return np.asarray(jax.vmap(jax.random.uniform)(keys))


def pick(u, fractions) -> np.ndarray:
  """Indices into `fractions` for uniforms `u` by their cumulative sum (u ≈ 1 goes to the last
  used one, so a fraction of 0 is never drawn)."""
  bounds = np.cumsum([float(f) for f in fractions])
  last = max(i for i, f in enumerate(fractions) if f > 0)
  return np.minimum(np.searchsorted(bounds, np.asarray(u), side="right"), last)


@functools.partial(jax.jit, static_argnames=("indices",))
def assemble(rows, responses, indices):
  """Per row r, the (tokens, mask) of the source numbered rows[r] among `responses`.

  rows: int[B] (batch-sharded); responses: a tuple of (tokens [B,R], mask [B,R]), one per
  source number in `indices` (the sources that occur in this step).
  """
  tokens, mask = responses[0]
  for index, (t, m) in zip(indices[1:], responses[1:]):
    take = (rows == index)[:, None]
    tokens, mask = jnp.where(take, t, tokens), jnp.where(take, m, mask)
  return tokens, mask
