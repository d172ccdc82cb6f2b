"""Batch sources: where each step's training responses come from, as a registry (like tasks).

  name      mix field       what                                                 module
  dataset   mix.dataset     the dataset's responses (supervised KD, SFT)           dataset.py
  teacher   mix.teacher     the teacher's generations (sequence-level KD)          teacher.py
  student   mix.student = λ the student's own samples (on-policy)                  student.py
  replay    mix.replay.*    replayed student samples on an adaptive schedule       replay.py

A step's source is drawn by the mix fractions of the per-row sources (gkd.sources.mixing), or
per row with mix.per_example, or by a source that schedules steps itself (replay). Validation,
the config's defaults, the progress bar and the run summary all read this registry, so a new
source is one module with a `Source` subclass and one entry in SOURCES.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from gkd.sources import mixing
from gkd.sources.base import Context, Source
from gkd.sources.dataset import Dataset
from gkd.sources.replay import Replay
from gkd.sources.student import OnPolicy
from gkd.sources.teacher import TeacherGenerations

SOURCES: dict[str, type[Source]] = {cls.name: cls for cls in (Dataset, TeacherGenerations,
                                                                OnPolicy, Replay)}
PER_ROW = tuple(name for name, cls in SOURCES.items() if cls.per_row)  # drawn by mix fractions
MIXED = "mixed"  # the step-level name of a per-row mixed batch (mix.per_example)

__all__ = ["Context", "MIXED", "PER_ROW", "SOURCES", "Source", "build", "check", "default_mix",
           "describe", "letter", "row_sources", "source_for_step", "source_id"]


def default_mix() -> ml_collections.ConfigDict:
  """The config's `mix` block: each per-row source's fraction (they sum to 1) and per_example."""
  return ml_collections.ConfigDict({**{name: SOURCES[name].default for name in PER_ROW},
                                    "per_example": False})


def _fractions(mix) -> list[float]:
  return [float(mix.get(name, 0.0)) for name in PER_ROW]


def source_for_step(seed: int, step: int, mix) -> str:
  """The batch source of `step`, drawn from fold_in(key(seed), step): the same on every host.
  MIXED when `mix.per_example` is set (`row_sources` draws the rows)."""
  if mix.get("per_example", False):
    return MIXED
  return PER_ROW[int(mixing.pick(mixing.step_uniform(seed, step), _fractions(mix)))]


def row_sources(seed: int, step: int, mix, num_rows: int) -> np.ndarray:
  """int[num_rows]: each global row's source, an index into PER_ROW."""
  return mixing.pick(mixing.row_uniforms(seed, step, num_rows), _fractions(mix))


def source_id(name: str) -> int:
  """A number per step source, for metrics: PER_ROW's index, then MIXED, then the others."""
  return (*PER_ROW, MIXED, *(n for n in SOURCES if n not in PER_ROW)).index(name)


def letter(name: str) -> str:
  """The source's mark in the progress bar."""
  return "m" if name == MIXED else SOURCES[name].letter


def describe(config) -> str:
  """The mix in words, for summaries: 'dataset responses 50%, student samples (on-policy) 50%'."""
  mix = config.mix
  parts = [f"{SOURCES[name].label} {float(mix[name]):.0%}" for name in PER_ROW if mix[name] > 0]
  scheduled = [cls.label for cls in SOURCES.values() if not cls.per_row and cls.enabled(config)]
  text = ", ".join(parts) + (" per row" if mix.get("per_example", False) else "")
  return text + "".join(f", with {label}" for label in scheduled)


def check(config) -> list[str]:
  """Problems with the config's mix, each naming its field; empty when it is fine."""
  mix, problems = config.mix, []
  for name in PER_ROW:
    value = mix.get(name, 0.0)
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
      problems.append(f"mix.{name}={value!r} must lie in [0, 1].")
  if problems:
    return problems
  total = sum(_fractions(mix))
  if not math.isclose(total, 1.0, abs_tol=1e-6):
    problems.append(f"mix fractions {'+'.join(PER_ROW)} must sum to 1, got {total:g}.")
  for cls in SOURCES.values():
    problems += cls.check(config)
  return problems


def build(config, ctx: Context) -> dict[str, Source]:
  """The run's sources, one instance per source it can draw."""
  return {name: cls(ctx) for name, cls in SOURCES.items() if cls.enabled(config)}
