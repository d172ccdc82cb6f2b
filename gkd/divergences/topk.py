"""Divergences from a teacher's top-k log-probabilities only (stored or API teachers).

`teacher_topk` keeps the teacher's k largest log-probabilities (of the full softmax at the given
temperature, not renormalized) and their indices. `topk_bucket_logprobs` maps a student and such
a teacher onto the (k+1)-outcome partition {top-1, …, top-k, rest}: the teacher's tail bucket
holds 1 − Σ top-k mass, the student's its exact mass outside the teacher's top-k. Any divergence
of gkd.divergences evaluated on the two bucketed distributions (`Divergence.topk`) is a lower
bound of the full value (data processing), growing with k and exact at k = V up to the floor.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gkd.divergences.core import check_temperature, log_probs

# Tail masses below this are rounding noise of 1 - sum(top-k probs) in float32.
TOPK_TAIL_FLOOR = 1e-6



def teacher_topk(teacher_logits, k: int, temperature=1.0) -> tuple[jax.Array, jax.Array]:
  """The teacher's k most likely tokens: (log-probs f32[..., k], indices int32[..., k]).

  The log-probs are those of the full softmax of teacher_logits / temperature (not
  renormalized over the k tokens), so 1 − Σ exp(log-probs) is the tail mass.
  """
  check_temperature(temperature)
  vocab = jnp.shape(teacher_logits)[-1]
  if not 1 <= int(k) <= vocab:
    raise ValueError(f"top-k size must be in [1, {vocab}], got {k}.")
  values, indices = jax.lax.top_k(log_probs(teacher_logits, temperature), int(k))
  return values, indices.astype(jnp.int32)


def _log1mexp(x: jax.Array) -> jax.Array:
  """log(1 − exp(x)) for x ≤ 0, accurate at both ends; −inf at x ≥ 0."""
  x = jnp.minimum(x, 0.0)
  near = x > -math.log(2.0)
  x_near = jnp.where(near, x, -1.0)  # safe stand-ins keep the unused branch finite
  x_far = jnp.where(near, -1.0, x)
  return jnp.where(near, jnp.log(-jnp.expm1(x_near)), jnp.log1p(-jnp.exp(x_far)))


def topk_bucket_logprobs(
  student_logits, topk_logprobs, topk_indices, temperature=1.0
) -> tuple[jax.Array, jax.Array]:
  """Student and teacher log-probs on {top-1, …, top-k, rest}: two f32[..., k+1].

  `temperature` divides the student logits only: the teacher's top-k log-probs must
  come from `teacher_topk` at the same temperature.
  """
  check_temperature(temperature)
  s_shape, lp_shape = jnp.shape(student_logits), jnp.shape(topk_logprobs)
  if lp_shape != jnp.shape(topk_indices) or s_shape[:-1] != lp_shape[:-1]:
    raise ValueError(
      f"top-k log-probs {lp_shape} and indices {jnp.shape(topk_indices)} must share the "
      f"leading shape of the student logits {s_shape}."
    )
  if lp_shape[-1] > s_shape[-1]:
    raise ValueError(f"top-k size {lp_shape[-1]} exceeds the vocabulary size {s_shape[-1]}.")
  ls_full = log_probs(student_logits, temperature)
  # A teacher entry of −inf is *absent* (a black-box teacher that returned fewer tokens, a
  # position with no targets), not "probability 0": its slot is −inf for both, so it adds
  # nothing, and the student's mass on its token stays in the tail. An absent slot points at
  # the row's most likely entry instead, which the tail excludes anyway (a row without any
  # entry is all tail, for both).
  lt_top = jnp.asarray(topk_logprobs, jnp.float32)
  present = lt_top > -jnp.inf
  idx = jnp.asarray(topk_indices, jnp.int32)
  best = jnp.take_along_axis(idx, jnp.argmax(lt_top, axis=-1)[..., None], axis=-1)
  idx = jnp.where(present, idx, best)
  ls_top = jnp.where(present, jnp.take_along_axis(ls_full, idx, axis=-1), -jnp.inf)
  # Student tail: exact logsumexp over the tokens outside the teacher's top-k.
  rest = jnp.put_along_axis(ls_full, idx, -jnp.inf, axis=-1, inplace=False)
  any_rest = jnp.any(rest > -jnp.inf, axis=-1)
  rest_safe = jnp.where(any_rest[..., None], rest, 0.0)
  ls_tail = jnp.where(any_rest, jax.nn.logsumexp(rest_safe, axis=-1), -jnp.inf)
  any_present = jnp.any(present, axis=-1)
  ls_tail = jnp.where(any_present, ls_tail, 0.0)  # no targets: all the student's mass is tail
  # Teacher tail: 1 − Σ top-k mass (all we have); logsumexp avoids underflow.
  lt_top_safe = jnp.where(any_present[..., None], lt_top, 0.0)
  lt_tail = jnp.where(any_present, _log1mexp(jax.nn.logsumexp(lt_top_safe, axis=-1)), 0.0)
  floor = math.log(TOPK_TAIL_FLOOR)
  ls_b = jnp.concatenate([ls_top, jnp.maximum(ls_tail, floor)[..., None]], axis=-1)
  lt_b = jnp.concatenate([lt_top, jnp.maximum(lt_tail, floor)[..., None]], axis=-1)
  return ls_b, lt_b
