"""Which source supplies each step's training sequences, and the cache of teacher generations.

As in the GKD paper (Agarwal et al., 2024, Alg. 1) the source is drawn once per *step*: with
probability λ = mix.student the batch is the student's own samples (on-policy), with
mix.teacher it is teacher-generated (sequence-level KD), else the dataset's responses.
The coin comes from a key derived from (seed, step), so every host draws the same branch and a
resumed run repeats it exactly.

`mix.per_example=True` draws the source per *row* instead: row r of step s takes its source
from fold_in(fold_in(key(seed), s), r), the same on every host, and the batch is assembled
from the three sources row by row. The fractions then hold within each batch (in
expectation) rather than across steps, at a price: a step whose rows need both sampled
sources runs the student's and the teacher's sampler over the whole batch (sampling is one
fixed-shape program; rows are selected afterwards).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

BATCH_SOURCES = ("dataset", "teacher", "student")  # where a step's training sequences come from
MIXED = "mixed"  # the step-level name of a per-example mixed batch (mix.per_example)
REPLAY = "replay"  # a step that reuses earlier student samples (mix.replay, gkd.sources.replay)


def _step_key(seed: int, step: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed ^ 0x6B64), step)  # salt: not the init/sampling key


def _pick(u, mix) -> np.ndarray:
  """Source indices for uniforms `u` by the cumulative fractions (u ≈ 1 goes to the last used one)."""
  bounds = np.cumsum([float(mix[name]) for name in BATCH_SOURCES])
  last = max(i for i, name in enumerate(BATCH_SOURCES) if mix[name] > 0)
  return np.minimum(np.searchsorted(bounds, np.asarray(u), side="right"), last)


def step_uniform(seed: int, step: int) -> float:
  """The step's uniform draw in [0, 1), from fold_in(key(seed), step): the same everywhere."""
  return float(jax.random.uniform(_step_key(seed, step)))


def source_for_step(seed: int, step: int, mix) -> str:
  """The batch source of `step`, drawn from fold_in(key(seed), step) — deterministic everywhere.

  Returns MIXED when `mix.per_example` is set: see `row_sources` for the rows' own draws.
  """
  if mix.get("per_example", False):
    return MIXED
  return BATCH_SOURCES[int(_pick(step_uniform(seed, step), mix))]


def source_id(name: str) -> int:
  """A number per step source for metrics: BATCH_SOURCES' index, then MIXED, then REPLAY."""
  return (*BATCH_SOURCES, MIXED, REPLAY).index(name)


def row_sources(seed: int, step: int, mix, num_rows: int) -> np.ndarray:
  """int[num_rows]: each global row's source index (into BATCH_SOURCES) for per-example mixing.

  Row r draws from fold_in(step key, r), so a row's source does not depend on the batch size
  or on how the rows are split over hosts.
  """
  keys = jax.vmap(lambda r: jax.random.fold_in(_step_key(seed, step), r))(jnp.arange(num_rows))
  return _pick(np.asarray(jax.vmap(jax.random.uniform)(keys)), mix)


@functools.partial(jax.jit, static_argnames=("names",))
def assemble(rows, responses, names):
  """Per row r, the (tokens, mask) of source BATCH_SOURCES[rows[r]] among `responses`.

  rows: int[B] (batch-sharded); responses: a tuple of (tokens [B,R], mask [B,R]), one per
  name in `names` (the sources that occur in this step).
  """
  tokens, mask = responses[0]
  for name, (t, m) in zip(names[1:], responses[1:]):
    take = (rows == BATCH_SOURCES.index(name))[:, None]
    tokens, mask = jnp.where(take, t, tokens), jnp.where(take, m, mask)
  return tokens, mask


class TeacherCache:
  """Teacher-generated responses per key (example id × samples per prompt + sample index).

  Sequence-level KD trains on fixed teacher outputs; caching them also means the teacher
  samples only on the first epoch. The cache is saved with checkpoints so a resumed run
  sees the same teacher outputs as an uninterrupted one. In a multi-host run every host
  holds every row (the run adds all hosts' new rows), so the cache is the same everywhere.
  """

  def __init__(self):
    self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def __len__(self):
    return len(self._rows)

  def missing(self, example_ids) -> bool:
    return any(int(i) not in self._rows for i in example_ids)

  def add(self, example_ids, tokens, mask):
    for i, t, m in zip(example_ids, np.asarray(tokens), np.asarray(mask)):
      self._rows.setdefault(int(i), (t, m))  # the first generation wins: outputs stay fixed

  def lookup(self, example_ids):
    tokens, mask = zip(*(self._rows[int(i)] for i in example_ids))
    return np.stack(tokens), np.stack(mask)

  def state_dict(self) -> dict:
    ids = sorted(self._rows)
    if not ids:
      return {}
    return {"ids": np.asarray(ids, np.int64),
            "tokens": np.stack([self._rows[i][0] for i in ids]),
            "mask": np.stack([self._rows[i][1] for i in ids])}

  def load_state_dict(self, state: dict):
    self._rows = {}
    if state:
      self.add(state["ids"], state["tokens"], state["mask"])
