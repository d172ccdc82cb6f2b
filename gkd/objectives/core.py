"""The distillation objective: divergence + α-mixed hard cross-entropy, masked averaging.

  loss = (α·T²·Σ div + (1−α)·Σ ce) / weight

where div is a `gkd.divergences` divergence at temperature T (the T² keeps soft-target
gradients on the scale of the hard ones, as in Hinton et al.), ce is the student's
cross-entropy at T = 1 on the labels, and Σ / weight follow `masked_reduce`. Every
function returns sums and a denominator rather than a mean, so the trainer can divide
by ONE global denominator across gradient-accumulation micro-batches and shards.

The same loss computed a chunk of positions at a time, without [B, T, V] logits, is
gkd.objectives.chunked; hidden-state terms are gkd.objectives.hidden and layer_distill.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gkd import divergences as D
from gkd import scoring

REDUCTIONS = ("sequence", "token")
HIDDEN_KINDS = ("cosine", "mse")  # the hidden-state terms (gkd.objectives.hidden)


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
    D.check_temperature(self.temperature)
    D.check_unit_interval("alpha", self.alpha)
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
      D.check_pair(student_logits, teacher)  # raises with a clear message
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
  if D.is_concrete(cfg.alpha) and float(cfg.alpha) == 1.0:
    ce = jax.lax.stop_gradient(ce)
  if D.is_concrete(cfg.alpha) and float(cfg.alpha) == 0.0:
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
