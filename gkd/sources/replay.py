"""Adaptive off-policy distillation with a replay buffer (DistiLLM, Ko et al., ICML 2024).

Sampling the student every step is what makes on-policy distillation expensive. DistiLLM's
adaptive off-policy approach keeps the student's generations in a replay buffer and reuses them:

  * Each step draws u from the step's key (as gkd.sources.mixing does, so every host and a resumed
    run draw the same). With p the current probability of student-generated data, the step
    samples the student afresh when u < p·(1 − t/T) (a share that decays over the run) or when
    u < p and the buffer is not yet full; it replays rows drawn from the buffer when u < p
    otherwise; and it trains on the dataset's responses when u ≥ p. Fresh samples join the
    buffer (first in, first out, `capacity` rows). The teacher scores replayed rows like fresh
    ones: only the student's generation is reused.
  * p starts at mix.student and is adapted from validation loss: every `every` steps the
    student's NLL of the validation split's first `val_examples` references is measured, and
    when it is at least `eps` above the last recorded one, p rises by `increment` (at most 1)
    and that loss becomes the reference. So the student's own data gains weight when training
    on the dataset's responses stops helping it generalize.

Objectives: DistiLLM pairs this with skew KL / skew reverse KL (`objective.divergence=
"skew_kl"` or `"skew_reverse_kl"`, with divergence_kw alpha); any divergence works.

Resume is exact: the buffer's rows go into the checkpoint's host arrays (`state_dict`, keys
prefixed "replay_"), and p and the reference loss into its JSON data (`AdaptiveSchedule`).
The buffer holds global rows, the same on every host.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

PREFIX = "replay_"
FIELDS = ("prompt_tokens", "prompt_mask", "response_tokens", "response_mask")


class ReplayBuffer:
  """The last `capacity` student-generated rows (host NumPy, global rows)."""

  def __init__(self, capacity: int):
    self.capacity = capacity
    self.rows: dict[str, np.ndarray] = {}

  def __len__(self):
    return len(self.rows[FIELDS[0]]) if self.rows else 0

  @property
  def full(self) -> bool:
    return len(self) >= self.capacity

  def add(self, rows: dict) -> None:
    """Appends rows ({field: [B, ...]}) and drops the oldest beyond capacity."""
    new = {k: np.asarray(rows[k]) for k in FIELDS}
    if self.rows and new["response_tokens"].shape[1:] != self.rows["response_tokens"].shape[1:]:
      raise ValueError("replay rows must keep one response width: add them before trimming.")
    joined = {k: np.concatenate([self.rows[k], new[k]]) if self.rows else new[k] for k in FIELDS}
    self.rows = {k: v[-self.capacity:] for k, v in joined.items()}

  def sample(self, key: jax.Array, n: int) -> dict:
    """n rows drawn uniformly (without replacement when the buffer holds n or more)."""
    size = len(self)
    if not size:
      raise ValueError("the replay buffer is empty.")
    index = np.asarray(jax.random.choice(key, size, (n,), replace=size < n))
    return {k: v[index] for k, v in self.rows.items()}

  def state_dict(self) -> dict:
    return {PREFIX + k: v for k, v in self.rows.items()}

  def load_state_dict(self, arrays: dict) -> None:
    self.rows = {k[len(PREFIX):]: np.asarray(v) for k, v in arrays.items() if k.startswith(PREFIX)}


def without_replay(arrays: dict) -> dict:
  """A checkpoint's host arrays without the buffer's (what the teacher cache reads)."""
  return {k: v for k, v in arrays.items() if not k.startswith(PREFIX)}


@dataclasses.dataclass
class AdaptiveSchedule:
  """p, the probability of student-generated data, and the validation loss it last rose at."""
  p: float
  eps: float
  increment: float
  reference: float | None = None

  def update(self, validation_loss: float) -> None:
    if self.reference is None:
      self.reference = validation_loss
    elif validation_loss >= self.reference + self.eps:
      self.p = min(self.p + self.increment, 1.0)
      self.reference = validation_loss

  def source(self, u: float, step: int, num_steps: int, buffer_full: bool) -> str:
    """'student' (fresh samples), 'replay' or 'dataset' for a step whose uniform draw is u."""
    fresh = self.p * (1.0 - step / num_steps)
    if u < fresh or (u < self.p and not buffer_full):
      return "student"
    return "replay" if u < self.p else "dataset"

  def state(self) -> dict:
    return {"p": self.p, "reference": self.reference}

  def load(self, state: dict) -> None:
    self.p, self.reference = float(state["p"]), state["reference"]


def check(config) -> list[str]:
  """Problems with mix.replay (messages naming the fields); empty when it is off or fine."""
  replay = config.mix.get("replay")
  if not replay or not replay.capacity:
    return []
  why, mix = f"mix.replay.capacity={replay.capacity}", config.mix
  problems = [
      (config.mode != "gkd", f"{why} replays student samples for a teacher to score: mode='gkd'."),
      (mix.teacher > 0 or mix.get("per_example", False), f"{why} draws each step's source itself "
       "(student, replay or dataset): set mix.teacher=0 and per_example=False."),
      (bool(config.get("teacher_store", "")), f"{why} needs a live teacher to score replayed "
       "samples, not a teacher_store."),
      (config.objective.get("rl_weight", 0.0) > 0, f"{why} does not combine with "
       "objective.rl_weight: replayed rows are not graded."),
      (replay.capacity < config.train.batch_size, f"{why} must hold at least one batch "
       f"(train.batch_size={config.train.batch_size})."),
      (replay.every < 1 or replay.val_examples < 1, "mix.replay.every and val_examples must be >= 1."),
      (not (replay.eps >= 0 and 0 < replay.increment <= 1),
       "mix.replay.eps must be >= 0 and increment in (0, 1]."),
  ]
  return [message for bad, message in problems if bad]
