"""DistilBERT-style hidden-state terms: align the student's hidden states with the teacher's.

`hidden_state_loss` compares two [.., D] states per position, through a learned projection
where the widths differ, as a cosine distance or a mean squared error; the trainer adds it with
its own weight (`objective.hidden_weight`). Intermediate blocks are paired by
gkd.objectives.layer_distill.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gkd.objectives.core import HIDDEN_KINDS, masked_reduce



def hidden_state_loss(student_hidden, teacher_hidden, mask, *, kind: str = "cosine",
                      projection=None, reduction: str = "sequence") -> tuple[jax.Array, jax.Array]:
  """DistilBERT-style hidden-state alignment; returns (total, weight) like `masked_reduce`.

  kind="cosine": 1 − cos(h_s·P, h_t) per position; kind="mse": mean over features of
  (h_s·P − h_t)². P is `projection` [Ds, Dt] (a trainable parameter the caller owns),
  required when the widths differ. The teacher is under stop_gradient.
  """
  if kind not in HIDDEN_KINDS:
    raise ValueError(f"kind must be one of {HIDDEN_KINDS}, got {kind!r}.")
  ds, dt = jnp.shape(student_hidden)[-1], jnp.shape(teacher_hidden)[-1]
  if jnp.shape(student_hidden)[:-1] != jnp.shape(teacher_hidden)[:-1]:
    raise ValueError(
      f"student hidden {jnp.shape(student_hidden)} and teacher hidden "
      f"{jnp.shape(teacher_hidden)} differ in their leading shape."
    )
  hs = jnp.asarray(student_hidden, jnp.float32)
  if projection is not None:
    if jnp.shape(projection) != (ds, dt):
      raise ValueError(f"projection must have shape {(ds, dt)}, got {jnp.shape(projection)}.")
    hs = hs @ jnp.asarray(projection, jnp.float32)
  elif ds != dt:
    raise ValueError(
      f"hidden widths differ (student {ds}, teacher {dt}): pass projection of shape {(ds, dt)}."
    )
  ht = jax.lax.stop_gradient(jnp.asarray(teacher_hidden, jnp.float32))
  if kind == "mse":
    per = jnp.mean(jnp.square(hs - ht), axis=-1)
  else:
    # rsqrt(max(‖x‖², ε)): a zero vector gets cos = 0 and finite gradients.
    def unit(x):
      return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))

    per = 1.0 - jnp.sum(unit(hs) * unit(ht), axis=-1)
  return masked_reduce(per, mask, reduction)
