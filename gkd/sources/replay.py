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

from gkd import sharding
from gkd.sources import mixing
from gkd.sources.base import Source

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


class Replay(Source):
  """Replayed student samples, and the schedule that picks every step's source under mix.replay."""

  name, letter, label = "replay", "r", "replayed student samples (DistiLLM)"
  per_row = False
  schedules = True

  @classmethod
  def enabled(cls, config) -> bool:
    replay = config.mix.get("replay")
    return bool(replay and replay.capacity)

  def __init__(self, ctx):
    super().__init__(ctx)
    c = ctx.config
    rc = c.mix.replay
    self.buffer = ReplayBuffer(rc.capacity)
    self.schedule = AdaptiveSchedule(p=c.mix.student, eps=rc.eps, increment=rc.increment)
    from gkd.eval.evaluator import Evaluator  # here: the config defaults import this registry
    on_validation = c.copy_and_resolve_references()
    on_validation.eval.update(split="validation", num_examples=rc.val_examples)
    self.validation = Evaluator(on_validation, ctx.tokenizer, ctx.mesh,
                                student_graph=ctx.student_graph)

  def source_for_step(self, step: int) -> str:
    """Student (fresh samples), replay or dataset, by the adaptive schedule and the step's key."""
    c = self.ctx.config
    return self.schedule.source(mixing.step_uniform(c.seed, step), step, c.train.num_steps,
                                self.buffer.full)

  def respond(self, batch, keys, rng):
    del batch, keys
    rows = self.buffer.sample(jax.random.fold_in(rng, 2), self.ctx.config.train.batch_size)
    return sharding.place_rows(self.ctx.mesh, rows)  # earlier samples, prompts included

  def observe(self, source, batch):
    if source == "student":  # fresh samples join the buffer (before trimming: one width)
      self.buffer.add({k: sharding.fetch(batch[k]) for k in FIELDS})

  def _adapt(self) -> float:
    """Measures the validation NLL and lets the schedule adapt p to it; returns the NLL."""
    nll = self.validation.reference_nll(self.ctx.student_params())
    self.schedule.update(nll)
    return nll

  def begin(self):
    if self.schedule.reference is None:  # the loss p adapts against
      self._adapt()

  def after_step(self, step):
    info, adapted = {}, step % self.ctx.config.mix.replay.every == 0
    if adapted:  # before a save at this step: the checkpoint holds the new p
      info["replay_validation_nll"] = self._adapt()
    info.update(replay_p=self.schedule.p, replay_size=len(self.buffer))
    return info, adapted

  def state(self):
    return self.buffer.state_dict(), self.schedule.state()

  def load(self, arrays, data):
    self.buffer.load_state_dict(arrays)
    self.schedule.load(data)

  @classmethod
  def check(cls, config) -> list[str]:
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
