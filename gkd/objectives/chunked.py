"""The distillation loss from hidden states and output tables, a chunk of positions at a time.

At a large vocabulary two [B, T, V] float32 logit tensors dominate a step's memory.
`chunked_distillation_loss` forms the heads and the loss for `objective.chunk_size` positions at
a time in a `lax.scan`, and runs each chunk's backward pass in the same scan step while its
logits are live (a custom VJP): the peak holds O(B·chunk·V) floats and nothing vocabulary-wide
is computed twice, where rematerialization would recompute both heads and the whole loss in the
backward pass. It equals `gkd.objectives.distillation_loss` on the full logits.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from gkd.objectives.core import (Objective, _check_sequence_shapes, _finish, _per_position,
                                 _safe_divide, _weighted_total, position_weights)


def chunked_distillation_loss(
  student_hidden,
  student_kernel,
  teacher_hidden,
  teacher_kernel,
  labels,
  loss_mask,
  objective: Objective = Objective(chunk_size=128),
  *,
  weight=None,
) -> tuple[jax.Array, dict]:
  """`distillation_loss(student_hidden @ student_kernel, teacher_hidden @ teacher_kernel, ...)`
  without materializing [B, T, V] logits.

  The head matmuls and the loss run one chunk of `objective.chunk_size` positions at a time in a
  `lax.scan`, and each chunk's backward pass runs in the same scan step, while its logits
  are live (see `_fused_chunk_totals`): the peak holds O(B·chunk_size·V) floats and
  nothing vocabulary-wide is computed twice. Only the loss is differentiable; the aux
  totals are metrics (stop_gradient). Logits are accumulated in float32 from inputs of any
  dtype. T need not divide by chunk_size (the tail is padded and masked). Gradients
  reach student_hidden and student_kernel only; the teacher is under stop_gradient.
  `weight` is as in `distillation_loss`.
  """
  cfg = objective
  chunk_size = cfg.chunk_size
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
  b, t, ds = jnp.shape(student_hidden)
  bt, tt, dt = jnp.shape(teacher_hidden)
  if (bt, tt) != (b, t):
    raise ValueError(
      f"student hidden {(b, t, ds)} and teacher hidden {(bt, tt, dt)} differ in B or T."
    )
  if jnp.shape(student_kernel)[0] != ds or jnp.shape(teacher_kernel)[0] != dt:
    raise ValueError(
      f"kernels {jnp.shape(student_kernel)}, {jnp.shape(teacher_kernel)} do not match hidden "
      f"widths {ds}, {dt}."
    )
  vs, vt = jnp.shape(student_kernel)[1], jnp.shape(teacher_kernel)[1]
  if vs != vt:
    raise ValueError(
      f"student and teacher vocabulary sizes differ ({vs} vs {vt}); restrict both kernels to "
      "the shared real vocabulary first."
    )
  _check_sequence_shapes((b, t), labels, loss_mask)

  mask = jnp.asarray(loss_mask, bool)
  w, local_weight = position_weights(mask, cfg.reduction)
  num_tokens = jnp.sum(mask).astype(jnp.float32)
  chunk = int(min(chunk_size, t))
  n_chunks = math.ceil(t / chunk)
  pad = n_chunks * chunk - t

  def to_chunks(x, fill=0):
    # [B, T, ...] -> [n_chunks, B, chunk, ...], padding T with masked-out positions.
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
    x = x.reshape((b, n_chunks, chunk) + x.shape[2:])
    return jnp.moveaxis(x, 1, 0)

  xs = (
    to_chunks(jnp.asarray(student_hidden)),
    to_chunks(jax.lax.stop_gradient(jnp.asarray(teacher_hidden))),
    to_chunks(jnp.asarray(labels, jnp.int32)),
    to_chunks(mask, False),
    to_chunks(w),
  )
  combined, div_total, ce_total = _fused_chunk_totals(
    cfg, student_kernel, jax.lax.stop_gradient(teacher_kernel), xs
  )
  # Only the loss carries a gradient (see `_fused_chunk_totals`); the aux totals are metrics.
  _, aux = _finish(jax.lax.stop_gradient(div_total), jax.lax.stop_gradient(ce_total),
                   local_weight, weight, num_tokens, cfg)
  return _safe_divide(combined, aux["weight"]), aux


def _loss_coefficients(cfg: Objective) -> tuple[float, float]:
  """The weights of Σdiv and Σce in the loss numerator (as `_finish` combines them)."""
  return cfg.alpha * cfg.temperature ** 2, 1.0 - cfg.alpha


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused_chunk_totals(cfg: Objective, s_kernel, t_kernel, xs):
  """(α·T²·Σdiv + (1−α)·Σce, Σdiv, Σce) over the chunks `xs`, one chunk at a time.

  The backward pass of a chunk is done in the forward scan, right after its loss, while its
  logits are live: the cotangent of the combined total is a scalar, so the gradients w.r.t.
  the chunk's student hidden states and the student kernel are fixed up to that scalar. This
  replaces rematerialization (which recomputed both heads, the teacher's included, and the
  whole vocabulary-wide loss a second time in the backward pass). Σdiv and Σce get no
  gradient of their own: callers stop_gradient them and differentiate the combined total.
  """
  return _fused_forward(cfg, s_kernel, t_kernel, xs)[0]


def _fused_forward(cfg: Objective, s_kernel, t_kernel, xs):
  c_div, c_ce = _loss_coefficients(cfg)
  # The scan reads the heads as [V, D], a tied embedding's layout: the caller's `embedding.T`
  # cancels here, where a [D, V] loop operand made XLA copy the whole table every step.
  s_unembed, t_unembed = s_kernel.T, t_kernel.T

  def step(carry, chunk_xs):
    div_acc, ce_acc, grad_kernel = carry
    hs, ht, lab, m, wc = chunk_xs
    zs = jnp.einsum("bcd,vd->bcv", hs, s_unembed, preferred_element_type=jnp.float32)
    zt = jnp.einsum("bcd,vd->bcv", ht, t_unembed, preferred_element_type=jnp.float32)

    def totals(z):
      div, ce = _per_position(z, zt, lab, cfg)
      return _weighted_total(div, m, wc), _weighted_total(ce, m, wc)

    (d, c), vjp = jax.vjp(totals, zs)
    (dz,) = vjp((jnp.float32(c_div), jnp.float32(c_ce)))
    dh = jnp.einsum("bcv,vd->bcd", dz, s_unembed, preferred_element_type=jnp.float32)
    grad_kernel = grad_kernel + jnp.einsum(
      "bcd,bcv->dv", hs, dz, preferred_element_type=jnp.float32
    )
    return (div_acc + d, ce_acc + c, grad_kernel), dh.astype(hs.dtype)

  zero = jnp.zeros((), jnp.float32)
  init = (zero, zero, jnp.zeros(jnp.shape(s_kernel), jnp.float32))
  (div_total, ce_total, grad_kernel), grad_hidden = jax.lax.scan(step, init, xs)
  combined = c_div * div_total + c_ce * ce_total
  grads = (grad_kernel.astype(jnp.result_type(s_kernel)), grad_hidden)
  return (combined, div_total, ce_total), grads


def _fused_bwd(cfg, grads, cotangents):
  g = cotangents[0]  # the combined total's; Σdiv and Σce are stop_gradient-ed by the caller
  grad_kernel, grad_hidden = grads
  # Cotangents keep their primals' dtypes: a bf16 student's hidden states get a bf16 cotangent
  # (g is float32; the product would otherwise promote, which JAX's backward pass refuses).
  xs_grads = ((g * grad_hidden).astype(grad_hidden.dtype), None, None, None, None)
  return (g * grad_kernel).astype(grad_kernel.dtype), None, xs_grads


_fused_chunk_totals.defvjp(_fused_forward, _fused_bwd)
