"""Intermediate-layer distillation (as TinyBERT and MiniLM match inner layers, not only the last).

`objective.layer_map = "0:1,1:3"` pairs student block 0 with teacher block 1 and student block 1
with teacher block 3 (0-based; a block's output is the residual stream after it, before the
final norm). Each pair contributes `objective.hidden_loss` ("cosine": 1 − cos, or "mse") between
the two at the response positions; the pairs are averaged and the mean is added with weight
`objective.hidden_weight`. With a layer map, these pairs replace the default last-hidden-state
term. Where the widths differ each pair has its own learned projection [Ds, Dt]
(`params["layer_projections"]`): trained and checkpointed with the student, never exported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gkd.objectives.hidden import hidden_state_loss

Pairs = tuple[tuple[int, int], ...]


def parse(spec: str) -> Pairs:
  """'0:1,1:3' -> ((0, 1), (1, 3)); '' -> (). Raises ValueError naming the bad item."""
  pairs = []
  for item in filter(None, (part.strip() for part in (spec or "").split(","))):
    s, sep, t = item.partition(":")
    try:
      if not sep:
        raise ValueError
      pairs.append((int(s), int(t)))
    except ValueError:
      raise ValueError(f"objective.layer_map item {item!r}: expected STUDENT_BLOCK:TEACHER_BLOCK "
                       "pairs such as '0:1,1:3'.") from None
  return tuple(pairs)


def check(pairs: Pairs, n_student: int, n_teacher: int) -> None:
  """Raises ValueError if a pair names a block the model does not have, or repeats a student block."""
  for s, t in pairs:
    if not (0 <= s < n_student and 0 <= t < n_teacher):
      raise ValueError(f"objective.layer_map pair {s}:{t}: the student has blocks 0..{n_student - 1} "
                       f"and the teacher 0..{n_teacher - 1}.")
  students = [s for s, _ in pairs]
  if len(set(students)) != len(students):
    raise ValueError(f"objective.layer_map {pairs}: a student block appears twice.")


def init_projections(pairs: Pairs, ds: int, dt: int, seed: int) -> list[jax.Array] | None:
  """One [Ds, Dt] projection per pair (scaled so h·P keeps h's scale), or None for equal widths."""
  if ds == dt:
    return None
  keys = jax.random.split(jax.random.key(seed), len(pairs))
  return [jax.random.normal(k, (ds, dt)) / np.sqrt(ds) for k in keys]


def layer_loss(student_layers, teacher_layers, mask, pairs: Pairs, *, kind: str,
               projections=None, reduction: str = "sequence") -> jax.Array:
  """The mean over `pairs` of `hidden_state_loss` totals (divide by the global weight)."""
  totals = []
  for i, (s, t) in enumerate(pairs):
    total, _ = hidden_state_loss(
        student_layers[s], jax.lax.stop_gradient(teacher_layers[t]), mask, kind=kind,
        projection=None if projections is None else projections[i], reduction=reduction)
    totals.append(total)
  return jnp.mean(jnp.stack(totals))
