"""What a batch source is: where one step's (or one row's) training responses come from.

A source is a class with its metadata as class attributes (the registry in gkd.sources lists
them) and an instance per run, built from the run's `Context`. Per step the run draws a source
(gkd.sources.mixing), asks it to `respond`, and lets every source `observe` the batch made; a
source's state (a cache, a buffer) is saved with the checkpoint, so a resumed run repeats an
uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, NamedTuple

import jax
import numpy as np


class Context(NamedTuple):
  """What sources may read from their run."""

  config: Any
  mesh: jax.sharding.Mesh
  tokenizer: Any
  student_graph: Any
  student_params: Callable[[], Any]  # the current student's full params (LoRA merged)
  teacher: Any  # a gkd.teachers.Teacher
  teacher_params: Callable[[], Any]


class Source:
  """A batch source; subclasses set the class attributes and override what they need.

  name          the config name: `mix.<name>` is its fraction when `per_row`
  letter        its mark in the progress bar
  label         what it is, for run summaries
  per_row       drawn by its mix fraction, per step or, with mix.per_example, per row (it then
                supplies response_tokens/mask only); otherwise it schedules steps itself
  default       its fraction in the default config
  """

  name: ClassVar[str]
  letter: ClassVar[str]
  label: ClassVar[str]
  per_row: ClassVar[bool] = True
  default: ClassVar[float] = 0.0
  schedules: ClassVar[bool] = False  # it draws every step's source itself (`source_for_step`)

  @classmethod
  def enabled(cls, config) -> bool:
    """Whether a run of `config` can draw this source (an unused source is not built)."""
    return float(config.mix.get(cls.name, 0.0)) > 0

  @classmethod
  def check(cls, config) -> list[str]:
    """Problems with the config's use of this source, messages naming the fields."""
    del config
    return []

  def __init__(self, ctx: Context):
    self.ctx = ctx

  def respond(self, batch: dict, keys: dict, rng: jax.Array) -> dict:
    """Arrays replacing the batch's (response_tokens and response_mask, for a `per_row`
    source). `keys` are the global rows' "example_id" and "sample" keys (host NumPy)."""
    raise NotImplementedError

  def observe(self, source: str, batch: dict) -> None:
    """Sees each step's untrimmed batch and the source that made it."""

  def begin(self) -> None:
    """Called once before the first step of a (resumed) run."""

  def after_step(self, step: int) -> tuple[dict, bool]:
    """(metrics to log for the step just taken, whether that step must be logged)."""
    del step
    return {}, False

  def state(self) -> tuple[dict[str, np.ndarray], Any]:
    """(host arrays, JSON data) to checkpoint; the arrays' keys must be unique across sources."""
    return {}, None

  def load(self, arrays: dict, data: Any) -> None:
    """Restores `state()` from a checkpoint (the arrays of every source, this one's data)."""
