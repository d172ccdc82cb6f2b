"""The arithmetic under every divergence: argument checks, float32 log-probabilities, and each
divergence on normalized log-probs over the last axis.

Working on log-probs lets the same code serve full logits and the (k+1)-bucket top-k
representation (gkd.divergences.topk). KL is written as a sum of non-negative terms with its
gradient in closed form, and the mixtures of JSD and skew KL are formed in log space.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_unit_interval(name: str, value) -> None:
  """Eager range check for a config float; traced values are left unchecked."""
  if not is_concrete(value):
    return
  v = float(value)
  if not 0.0 <= v <= 1.0 or math.isnan(v):
    raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")


def check_temperature(temperature) -> None:
  if not is_concrete(temperature):
    return
  t = float(temperature)
  if not t > 0.0 or math.isinf(t):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")


def check_pair(student_logits, teacher_logits) -> None:
  s, t = jnp.shape(student_logits), jnp.shape(teacher_logits)
  if len(s) == 0 or len(t) == 0:
    raise ValueError("logits need a vocabulary axis: got a scalar.")
  if s[-1] != t[-1]:
    raise ValueError(
      f"student and teacher vocabulary sizes differ ({s[-1]} vs {t[-1]}); restrict both "
      "to the shared real vocabulary first."
    )
  if s != t:
    raise ValueError(f"student logits {s} and teacher logits {t} must have the same shape.")


# ------------------------------------------------------------------ log-prob core
# Everything below works on normalized log-probabilities over the last axis, so the
# same code serves full logits and the (k+1)-bucket top-k representation.


def log_probs(logits, temperature=1.0) -> jax.Array:
  """float32 log-softmax of logits / temperature (bf16 inputs are upcast first)."""
  return jax.nn.log_softmax(jnp.asarray(logits, jnp.float32) / temperature, axis=-1)


@jax.custom_vjp
def _kl(logp: jax.Array, logq: jax.Array) -> jax.Array:
  """KL(p‖q) for normalized log-probs, as a sum of non-negative terms.

  Since Σp = Σq = 1, KL = Σ [p·log(p/q) − p + q] and each bracket equals
  p·(expm1(d) − d) ≥ 0 with d = log q − log p. This form never goes negative in
  float32 (the plain Σ p·(log p − log q) does for nearly equal p and q) and keeps
  relative accuracy when KL is tiny. For d ≥ 1 the equivalent q − p − p·d avoids
  overflowing exp(d). An entry with p = 0 contributes q (0 when both are masked);
  p > 0 = q gives +inf. Every operand is made safe *before* the arithmetic (the
  "double where") so masked entries get zero, not NaN, gradients.

  The gradient is written out (`_kl_bwd`) rather than traced through that form: autodiff of
  the two branches and the where-chains costs more time and memory traffic than the closed
  form, over the whole vocabulary (experiments/benchmarks/loss_grad.py measures it).
  """
  p_pos, q_pos = logp > -jnp.inf, logq > -jnp.inf
  both = p_pos & q_pos
  lp = jnp.where(both, logp, 0.0)
  lq = jnp.where(both, logq, 0.0)
  d = lq - lp
  small = d < 1.0
  d_small = jnp.where(small, d, 0.0)
  d_big = jnp.where(small, 1.0, d)
  p = jnp.exp(lp)
  term = jnp.where(
    small, p * (jnp.expm1(d_small) - d_small), jnp.exp(lq) - p - p * d_big
  )
  q_only = jnp.exp(jnp.where(q_pos, logq, -jnp.inf))
  term = jnp.where(both, term, jnp.where(p_pos, jnp.inf, q_only))
  return jnp.sum(term, axis=-1)


def _kl_fwd(logp, logq):
  return _kl(logp, logq), (logp, logq)


def _kl_bwd(residuals, g):
  """Per entry, with log p and log q taken as free inputs (as autodiff of `_kl` sees them):
  ∂/∂log p = p·(log p − log q) and ∂/∂log q = q − p, both 0 where p = q = 0; an entry with
  p > 0 = q (an infinite value) passes no gradient to log p."""
  logp, logq = residuals
  both = (logp > -jnp.inf) & (logq > -jnp.inf)
  p, q = jnp.exp(logp), jnp.exp(logq)
  d_logp = jnp.where(both, p * (jnp.where(both, logp, 0.0) - jnp.where(both, logq, 0.0)), 0.0)
  return d_logp * g[..., None], (q - p) * g[..., None]


_kl.defvjp(_kl_fwd, _kl_bwd)


def _log_mix(w, logp: jax.Array, logq: jax.Array) -> jax.Array:
  """log(w·p + (1−w)·q) in log space, for 0 < w < 1 (w may be traced)."""
  # Entries where both are -inf stay -inf but are computed from safe zeros so that
  # logaddexp's gradient has no -inf - -inf; `_kl` masks them out afterwards.
  both_zero = (logp == -jnp.inf) & (logq == -jnp.inf)
  a = jnp.where(both_zero, 0.0, jnp.log(w) + logp)
  b = jnp.where(both_zero, 0.0, jnp.log1p(-w) + logq)
  return jnp.where(both_zero, -jnp.inf, jnp.logaddexp(a, b))


def _skew_lp(ls, lt, alpha):
  """KL(T‖αT + (1−α)S) on log-probs."""
  if is_concrete(alpha):
    a = float(alpha)
    if a == 0.0:
      return _kl(lt, ls)
    if a == 1.0:
      return jnp.zeros(ls.shape[:-1], jnp.float32)
    return _kl(lt, _log_mix(a, lt, ls))
  a_safe = jnp.clip(alpha, 1e-6, 1 - 1e-6)  # only feeds the branch not selected at the ends
  mid = _kl(lt, _log_mix(a_safe, lt, ls))
  return jnp.where(alpha == 0, _kl(lt, ls), jnp.where(alpha == 1, 0.0, mid))


def _jsd_lp(ls, lt, beta, normalized):
  """Generalized JSD on log-probs; see the module docstring for the endpoints."""
  def interior(b):
    lm = _log_mix(b, lt, ls)
    value = b * _kl(lt, lm) + (1 - b) * _kl(ls, lm)
    return value / (b * (1 - b)) if normalized else value

  if is_concrete(beta):
    b = float(beta)
    if b == 0.0:
      return _kl(lt, ls)
    if b == 1.0:
      return _kl(ls, lt)
    return interior(b)
  b_safe = jnp.clip(beta, 1e-6, 1 - 1e-6)  # only feeds the branch not selected at the ends
  return jnp.where(beta == 0, _kl(lt, ls), jnp.where(beta == 1, _kl(ls, lt), interior(b_safe)))


def _tv_lp(ls, lt):
  return 0.5 * jnp.sum(jnp.abs(jnp.exp(lt) - jnp.exp(ls)), axis=-1)
