"""Which source supplies each step's training sequences, and the cache of teacher generations.

As in the GKD paper (Agarwal et al., 2024, Alg. 1) the source is drawn once per *step*: with
probability λ = mix.student the batch is the student's own samples (on-policy), with
mix.teacher it is teacher-generated (sequence-level KD), else the dataset's responses.
The coin comes from a key derived from (seed, step), so every host draws the same branch and a
resumed run repeats it exactly.
"""

import jax
import numpy as np

BATCH_SOURCES = ("dataset", "teacher", "student")  # where a step's training sequences come from


def source_for_step(seed: int, step: int, mix) -> str:
  """The batch source of `step`, drawn from fold_in(key(seed), step) — deterministic everywhere."""
  key = jax.random.fold_in(jax.random.key(seed ^ 0x6B64), step)  # salt: not the init/sampling key
  u = float(jax.random.uniform(key))
  cumulative = 0.0
  for name in BATCH_SOURCES:
    cumulative += float(mix[name])
    if u < cumulative:
      return name
  return next(n for n in reversed(BATCH_SOURCES) if mix[n] > 0)  # u ≈ 1 against rounding


class TeacherCache:
  """Teacher-generated responses per example id: each prompt is generated for once.

  Sequence-level KD trains on fixed teacher outputs; caching them also means the teacher
  samples only on the first epoch. The cache is saved with checkpoints so a resumed run
  sees the same teacher outputs as an uninterrupted one.
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
