"""The distillation objective: divergence + α-mixed hard cross-entropy, masked averaging.

  loss = (α·T²·Σ div + (1−α)·Σ ce) / weight

where div is a `gkd.divergences` divergence at temperature T (the T² keeps soft-target
gradients on the scale of the hard ones, as in Hinton et al.), ce is the student's
cross-entropy at T = 1 on the labels, and Σ / weight follow `masked_reduce`. Every
function returns sums and a denominator rather than a mean, so the trainer can divide
by ONE global denominator across gradient-accumulation micro-batches and shards.

`chunked_distillation_loss` computes the same loss from hidden states and output
kernels, a chunk of the sequence at a time with each chunk's backward pass done while
its logits are live, so neither pass holds full [B, T, V] float32 logits (they dominate
memory at V ≈ 49k) and nothing vocabulary-wide is computed twice. The hidden-state term
(`hidden_state_loss`) is kept separate so the trainer can add it with its own weight.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from gkd import divergences as D
from gkd import scoring

REDUCTIONS = ("sequence", "token")
HIDDEN_KINDS = ("cosine", "mse")


# ---------------------------------------------------------------- reductions


def _check_reduction(reduction: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def position_weights(mask, reduction: str = "sequence") -> tuple[jax.Array, jax.Array]:
  """Per-position weights w [..., T] and the denominator, so that Σ v·w / weight is the loss.

  "sequence": w = m / max(n_b, 1) (mean over each sequence's tokens), weight = number of
  sequences with at least one token. "token": w = m, weight = number of tokens.
  """
  _check_reduction(reduction)
  m = jnp.asarray(mask).astype(jnp.float32)
  if reduction == "token":
    return m, jnp.sum(m)
  n = jnp.sum(m, axis=-1, keepdims=True)
  return m / jnp.maximum(n, 1.0), jnp.sum(n > 0).astype(jnp.float32)


def _weighted_total(values, mask, w) -> jax.Array:
  # where, not v·m: a NaN/inf at a masked position must not leak into the total.
  return jnp.sum(jnp.where(mask, jnp.asarray(values, jnp.float32), 0.0) * w)


def masked_reduce(values, mask, reduction: str = "sequence") -> tuple[jax.Array, jax.Array]:
  """(total, weight) of per-position values [..., T] over a boolean mask [..., T].

  "sequence": total = Σ_b Σ_t v·m / max(n_b, 1), weight = #{b : n_b > 0}
  "token":    total = Σ v·m,                   weight = Σ m
  The loss is total / weight; all-masked sequences contribute nothing to either.
  """
  if jnp.shape(values) != jnp.shape(mask):
    raise ValueError(f"values {jnp.shape(values)} and mask {jnp.shape(mask)} must have one shape.")
  mask = jnp.asarray(mask, bool)
  w, weight = position_weights(mask, reduction)
  return _weighted_total(values, mask, w), weight


def _safe_divide(total, weight):
  # An empty batch (weight 0) has total 0: return 0, with finite gradients.
  weight = jnp.asarray(weight, jnp.float32)
  return total / jnp.where(weight > 0, weight, 1.0)


# -------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Objective:
  """Every static setting of the distillation loss (hashable: part of the jit cache key).

  divergence    a bound `gkd.divergences.Divergence` (from `divergences.get(name, **kw)`)
  temperature   the loss temperature T (divides both logit sets; brings the T² factor)
  alpha         weight of the soft term; 1 − α goes to hard-label CE at T = 1
  reduction     "sequence": mean over each sequence's tokens, then over sequences;
                "token": one flat mean over all tokens
  teacher_topk  > 0: the divergence from the teacher's top-k log-probs only
  chunk_size    > 0: head + loss in sequence chunks (memory); 0: plain
  hidden_loss   "", "cosine" or "mse": a DistilBERT-style last-hidden-state term,
                added with weight `hidden_weight`
  rl_weight     > 0: add a policy-gradient term on graded on-policy samples
                (gkd.objectives.policy_gradient) with this weight
  Bad values raise ValueError on construction.
  """

  divergence: D.Divergence = D.get("generalized_jsd")
  temperature: float = 1.0
  alpha: float = 1.0
  reduction: str = "sequence"
  teacher_topk: int = 0
  chunk_size: int = 0
  hidden_loss: str = ""
  hidden_weight: float = 0.0
  rl_weight: float = 0.0

  def __post_init__(self):
    if not isinstance(self.divergence, D.Divergence):
      raise ValueError(f"divergence must come from gkd.divergences.get(), got {self.divergence!r}.")
    D._check_temperature(self.temperature)
    D._check_unit_interval("alpha", self.alpha)
    _check_reduction(self.reduction)
    for name in ("teacher_topk", "chunk_size"):
      value = getattr(self, name)
      if int(value) != value or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
    if self.hidden_loss not in ("",) + HIDDEN_KINDS:
      raise ValueError(f"hidden_loss must be one of {('',) + HIDDEN_KINDS}, got {self.hidden_loss!r}.")
    for name in ("hidden_weight", "rl_weight"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")

  @classmethod
  def from_config(cls, objective) -> "Objective":
    """From a config's `objective` block (see gkd.train.defaults)."""
    return cls(divergence=D.get(objective.divergence, **dict(objective.divergence_kw)),
               temperature=objective.temperature, alpha=objective.alpha,
               reduction=objective.reduction, teacher_topk=int(objective.teacher_topk),
               chunk_size=int(objective.chunk_size), hidden_loss=objective.hidden_loss,
               hidden_weight=objective.hidden_weight,
               rl_weight=float(objective.get("rl_weight", 0.0)))


def _per_position(student_logits, teacher, labels, cfg: Objective):
  """(divergence, hard CE), both f32 [B, T]. `teacher` is logits or a top-k pair."""
  temperature = cfg.temperature
  if isinstance(teacher, tuple):  # precomputed (topk_logprobs, topk_indices)
    lp, idx = jax.lax.stop_gradient(teacher[0]), teacher[1]
    div = cfg.divergence.topk(student_logits=student_logits, topk_logprobs=lp, topk_indices=idx,
                              temperature=temperature)
  else:
    teacher = jax.lax.stop_gradient(teacher)
    if cfg.teacher_topk:
      D._check_pair(student_logits, teacher)  # raises with a clear message
      lp, idx = D.teacher_topk(teacher, cfg.teacher_topk, temperature)
      div = cfg.divergence.topk(student_logits=student_logits, topk_logprobs=lp,
                                topk_indices=idx, temperature=temperature)
    else:
      div = cfg.divergence(student_logits=student_logits, teacher_logits=teacher,
                           temperature=temperature)
  # Hard CE at T = 1: logsumexp − z[label], without a second [B, T, V] log-softmax.
  z = jnp.asarray(student_logits, jnp.float32)
  vocab = z.shape[-1]
  safe_labels = jnp.clip(jnp.asarray(labels, jnp.int32), 0, vocab - 1)  # masked slots may hold -100
  ce = -scoring.label_logprobs(z, safe_labels)
  # A term the loss weights by zero (α = 1 or α = 0) is only a metric: without a gradient
  # path, its vocabulary-wide backward pass is not computed at all.
  if D._is_concrete(cfg.alpha) and float(cfg.alpha) == 1.0:
    ce = jax.lax.stop_gradient(ce)
  if D._is_concrete(cfg.alpha) and float(cfg.alpha) == 0.0:
    div = jax.lax.stop_gradient(div)
  return div, ce


def _finish(div_total, ce_total, local_weight, weight, num_tokens, cfg: Objective):
  weight = local_weight if weight is None else jnp.asarray(weight, jnp.float32)
  t2 = cfg.temperature ** 2
  loss = _safe_divide(cfg.alpha * t2 * div_total + (1.0 - cfg.alpha) * ce_total, weight)
  aux = {
    "divergence": _safe_divide(div_total, weight),
    "hard_ce": _safe_divide(ce_total, weight),
    "weight": weight,
    "num_tokens": num_tokens,
    "divergence_total": div_total,
    "hard_ce_total": ce_total,
  }
  return loss, aux


def _check_sequence_shapes(leading, labels, loss_mask):
  if jnp.shape(labels) != leading or jnp.shape(loss_mask) != leading:
    raise ValueError(
      f"labels {jnp.shape(labels)} and loss_mask {jnp.shape(loss_mask)} must both be {leading}."
    )


# ------------------------------------------------------------------ the losses


def distillation_loss(
  student_logits,
  teacher_logits,
  labels,
  loss_mask,
  objective: Objective = Objective(),
  *,
  weight=None,
) -> tuple[jax.Array, dict]:
  """(α·T²·Σdiv + (1−α)·Σce) / weight for logits [B, T, V]; returns (loss, aux).

  labels[b, t] is the token that logits[b, t] predicts (the caller shifts). The
  teacher is under stop_gradient. `objective.teacher_topk > 0` evaluates the divergence
  from the teacher's top-k log-probs (see `gkd.divergences`); `teacher_logits` may also
  be a precomputed `(topk_logprobs, topk_indices)` pair from `divergences.teacher_topk`
  at the same temperature. `weight` defaults to the local `masked_reduce` weight;
  pass a global one to share a denominator across micro-batches and shards. An
  empty batch gives loss 0. aux holds f32 scalars: divergence and hard_ce (means),
  weight, num_tokens, and the two unnormalized totals.
  """
  cfg = objective
  _check_sequence_shapes(jnp.shape(student_logits)[:-1], labels, loss_mask)
  mask = jnp.asarray(loss_mask, bool)
  div, ce = _per_position(student_logits, teacher_logits, labels, cfg)
  w, local_weight = position_weights(mask, cfg.reduction)
  num_tokens = jnp.sum(mask).astype(jnp.float32)
  return _finish(_weighted_total(div, mask, w), _weighted_total(ce, mask, w), local_weight,
                 weight, num_tokens, cfg)


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
  # cancels here, where a [D, V] loop operand made XLA copy the table (110 MB) every step.
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


# ---------------------------------------------------------------- hidden states


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
