"""Universal Logit Distillation's loss (Boizard et al., 2024): the student's and a teacher's
next-token distributions compared across *different* vocabularies.

"Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss" compares them by the
Wasserstein-1 distance under a cost that ignores which token is which; its closed form is the L1
distance between the two probability vectors sorted in decreasing order, the smaller one padded
with zeros,

  ULD(p_s, p_t) = Σ_i |sort↓(p_s)_i − sort↓(p_t)_i|.

It is 0 exactly when the two distributions are equal up to a permutation of the tokens, so it
says nothing about *which* token to predict; the student's cross-entropy on its own tokens does
that. The loss is the objective's usual mix with ULD in place of the divergence:

  loss = (α·T²·Σ ULD + (1−α)·Σ CE) / weight,   α < 1 required,

with the temperature T dividing both logit sets and CE at T = 1 over every response token.
Positions are paired by index after truncating both tokenizations to the shorter one
(gkd.teachers.uld makes the teacher's tokenization).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gkd import scoring
from gkd.objectives.core import Objective, masked_reduce


def uld_distance(*, student_logits, teacher_logits, temperature: float = 1.0) -> jax.Array:
  """Per-position ULD [...] between logits [..., Vs] and [..., Vt] (Vs and Vt may differ), f32.

  Past the smaller vocabulary's size m = min(Vs, Vt) the zero-padded side is 0, so the sum
  there is just the other side's tail mass: ULD = Σ_{i≤m} |a_i − b_i| + tail_a + tail_b with
  a, b the top-m probabilities. So only a top-m selection is needed, not a sort of the larger
  vocabulary: far cheaper when one vocabulary is small (experiments/README.md, "Figures behind
  code choices").
  """
  ps = jax.nn.softmax(jnp.asarray(student_logits, jnp.float32) / temperature, axis=-1)
  pt = jax.nn.softmax(jnp.asarray(teacher_logits, jnp.float32) / temperature, axis=-1)
  m = min(ps.shape[-1], pt.shape[-1])
  a, b = jax.lax.top_k(ps, m)[0], jax.lax.top_k(pt, m)[0]  # decreasing
  tails = (jnp.maximum(jnp.sum(ps, -1) - jnp.sum(a, -1), 0.0)
           + jnp.maximum(jnp.sum(pt, -1) - jnp.sum(b, -1), 0.0))
  return jnp.sum(jnp.abs(a - b), axis=-1) + tails


def aligned_mask(student_mask, teacher_mask) -> jax.Array:
  """[B, L], L = min(Rs, Rt): position i is paired when both sequences have a token i."""
  length = min(student_mask.shape[1], teacher_mask.shape[1])
  n = jnp.minimum(jnp.sum(student_mask, -1), jnp.sum(teacher_mask, -1))
  return jnp.arange(length)[None] < n[:, None]


def uld_loss(student_logits, teacher_logits, labels, student_mask, teacher_mask,
             objective: Objective, *, weight=None) -> tuple[jax.Array, dict]:
  """(loss, aux) for student logits [B, Rs, Vs] on its response tokens `labels` [B, Rs] and the
  teacher's logits [B, Rt, Vt] on its own tokenization; see the module docstring.

  The ULD term is reduced over the aligned positions, CE over the student's response mask, each
  by `objective.reduction`; `weight` (default: the student mask's) divides both.
  """
  student_mask = jnp.asarray(student_mask, bool)
  valid = aligned_mask(student_mask, jnp.asarray(teacher_mask, bool))
  length = valid.shape[1]
  per = uld_distance(student_logits=student_logits[:, :length],
                     teacher_logits=jax.lax.stop_gradient(teacher_logits[:, :length]),
                     temperature=objective.temperature)
  uld_total, _ = masked_reduce(per, valid, objective.reduction)
  z = jnp.asarray(student_logits, jnp.float32)
  safe = jnp.clip(jnp.asarray(labels, jnp.int32), 0, z.shape[-1] - 1)
  ce = -scoring.label_logprobs(z, safe)
  ce_total, local_weight = masked_reduce(ce, student_mask, objective.reduction)
  weight = jnp.maximum(local_weight if weight is None else weight, 1.0)
  loss = (objective.alpha * objective.temperature ** 2 * uld_total
          + (1.0 - objective.alpha) * ce_total) / weight
  return loss, {"divergence": uld_total / weight, "hard_ce": ce_total / weight,
                "aligned_tokens": jnp.sum(valid).astype(jnp.float32)}
