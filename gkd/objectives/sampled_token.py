"""The sampled-token estimator of the reverse KL (`objective.estimator = "sampled_token"`).

On-policy distillation as Thinking Machines describe it ("On-Policy Distillation", 2025): the
student samples a response, the teacher gives only its log-probability of each sampled token,
and the per-token advantage

  A_t = −(log π_θ(y_t | y_<t, x) − log π_T(y_t | y_<t, x))      (no gradient)

drives a policy-gradient update, −Σ_t ρ_t·A_t·log π_θ(y_t | ...), reduced as the distillation
loss is (`objective.reduction`, the step's global denominator). For each prefix,
E_{y_t∼π_θ}[A_t·∇log π_θ(y_t)] = −∇KL(π_θ‖π_T), so its mean gradient is the full-vocabulary
reverse KL's at the sampled prefixes (with no gradient through the sampling, as GKD's on-policy
loss has), from one teacher number per token: nothing vocabulary-wide is computed for the
teacher, which can then be a server that only scores (gkd.teachers.scorer).

ρ_t = π_θ(y_t | ...) / q(y_t | ...) corrects for a sampler q that is not the current student:
replayed samples drawn by earlier weights (mix.replay), or a temperature other than 1. q's
log-probs come in the batch ("sampler_logprobs", from the sampler that drew the tokens); without
them ρ = 1. ρ corrects the token, not the prefix it follows (the usual token-level correction of
PPO and truncated importance sampling). `objective.sampled_token_clip = c > 0` caps ρ at c
(truncated importance sampling: lower variance, a bias where ρ > c); 0 leaves it uncapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gkd import scoring
from gkd.objectives.core import masked_reduce

SAMPLER_LOGPROBS = "sampler_logprobs"  # the batch key of the sampler's log-probs [B, R]


def student_logprobs(hidden, kernel, labels, chunk_size: int = 0) -> jax.Array:
  """log π_θ(y_t | ...) [B, R] (float32, differentiable) from hidden states [B, R, D] and the
  output table [D, V]; with chunk_size > 0 the head is formed `chunk_size` positions at a time
  (rematerialized in the backward pass), so no [B, R, V] logits are held."""
  if not chunk_size:
    return scoring.label_logprobs(scoring.head(hidden, kernel), labels)
  b, r, d = hidden.shape
  chunk = min(chunk_size, r)
  n = -(-r // chunk)
  pad = n * chunk - r
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk, d).swapaxes(0, 1)
  y = jnp.pad(labels, ((0, 0), (0, pad))).reshape(b, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one(kernel, h_c, y_c):
    return scoring.label_logprobs(scoring.head(h_c, kernel), y_c)

  _, out = jax.lax.scan(lambda carry, xs: (carry, one(kernel, *xs)), None, (h, y))
  return out.swapaxes(0, 1).reshape(b, n * chunk)[:, :r]


def loss(student_lp, teacher_lp, mask, weight, *, reduction: str, sampler_lp=None,
         clip: float = 0.0) -> tuple[jax.Array, dict]:
  """(loss, metrics) of the sampled-token policy gradient; all per-token arrays are [B, R].

  metrics: "divergence" the one-sample reverse-KL estimate Σ(log π_θ − log π_T) over the
  denominator (unbiased for the reverse KL on fresh samples), "importance_weight" the mean ρ and
  "clipped" the share of tokens whose ρ was capped (both over response tokens).
  """
  student_lp = jnp.asarray(student_lp, jnp.float32)
  teacher_lp = jax.lax.stop_gradient(jnp.asarray(teacher_lp, jnp.float32))
  mask = jnp.asarray(mask, bool)
  gap = student_lp - teacher_lp
  advantage = -jax.lax.stop_gradient(gap)
  ratio = jnp.ones_like(student_lp)
  if sampler_lp is not None:  # exp of a masked-out position's difference is never used
    ratio = jnp.exp(jnp.where(mask, jax.lax.stop_gradient(student_lp) - sampler_lp, 0.0))
  clipped = jnp.zeros_like(mask)
  if clip > 0:
    clipped = ratio > clip
    ratio = jnp.minimum(ratio, clip)
  total, _ = masked_reduce(-ratio * advantage * student_lp, mask, reduction)
  estimate, _ = masked_reduce(jax.lax.stop_gradient(gap), mask, reduction)
  tokens = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
  value = total / weight
  return value, {"loss": value, "divergence": estimate / weight,
                 "importance_weight": jnp.sum(jnp.where(mask, ratio, 0.0)) / tokens,
                 "clipped": jnp.sum(clipped & mask) / tokens}


def check(config, *, teacher_scores_tokens: bool, teacher_kind: str) -> list[str]:
  """Problems with `objective.estimator` in `config` (messages naming the fields)."""
  obj = config.objective
  estimator = obj.get("estimator", "full")
  if estimator != "sampled_token":
    return []
  why, mix = "objective.estimator='sampled_token'", config.mix
  problems = [
      (config.mode != "gkd", f"{why} distils a teacher: mode='gkd'."),
      (mix.student != 1.0 or mix.get("per_example", False),
       f"{why} is a policy gradient on the student's own samples; rows from the dataset or the "
       f"teacher would bias it, so it needs mix.student=1 (got mix.student={mix.student})."),
      (bool(config.sampling.speculative_topk), f"{why}: speculative KD's tokens are not the "
       "student's samples; set sampling.speculative_topk=0."),
      (not teacher_scores_tokens, f"{why} needs a teacher that scores the student's tokens; a "
       f"{teacher_kind} teacher cannot (use a teacher model, several, teacher.source='scorer' or "
       "'self')."),
      (obj.divergence != "reverse_kl", f"{why} estimates the reverse KL: set "
       f"objective.divergence='reverse_kl' (got {obj.divergence!r})."),
      (obj.temperature != 1.0 or obj.alpha != 1.0, f"{why} needs objective.temperature=1 and "
       "alpha=1 (a loss temperature and the hard CE are terms of the full estimator)."),
      (bool(obj.teacher_topk) or bool(obj.hidden_loss), f"{why} does not combine with "
       "objective.teacher_topk or hidden_loss."),
  ]
  return [message for bad, message in problems if bad]
