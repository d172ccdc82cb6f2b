"""Token-level divergences between a student and a teacher distribution.

Every public divergence takes keyword arrays `student_logits` and `teacher_logits`
of shape [..., V] (any float dtype; the maths runs in float32) and `temperature`,
which divides both logit sets before the softmax. It returns the per-position
divergence [...] in nats, float32. With S = student, T = teacher:

  forward_kl       KL(T‖S)                                       ("mode covering")
  reverse_kl       KL(S‖T)                                       ("mode seeking")
  generalized_jsd  β·KL(T‖M) + (1−β)·KL(S‖M),  M = βT + (1−β)S   (GKD paper)
  skew_kl          KL(T‖αT + (1−α)S)
  skew_reverse_kl  KL(S‖αS + (1−α)T)
  total_variation  ½·Σ|T − S|

Limits of the generalized JSD (derived by expanding log M around β = 0 and 1):
  KL(S‖M) = β²/2·χ²(T‖S) + O(β³), so JSD(β)/β → KL(T‖S) = forward_kl as β → 0;
  symmetrically JSD(β)/(1−β) → KL(S‖T) = reverse_kl as β → 1.
  JSD(β) itself tends to 0 at both ends (it is bounded by the binary entropy
  H(β) = −β·log β − (1−β)·log(1−β) ≤ log 2). The API contract nevertheless defines
  β = 0 as forward_kl and β = 1 as reverse_kl exactly, so the plain loss JUMPS at
  the two ends (from ~0 to a full KL). `normalized=True` returns
  JSD(β)/(β(1−β)), which tends to forward_kl at β → 0 and to reverse_kl at β → 1:
  with it the endpoints are the continuous limits. β is never clamped.

Masked vocabulary: −inf logits are allowed (on both sides for the same entries);
a zero-probability entry contributes exactly 0 and gets a zero gradient. If the
student puts −inf where the teacher has mass, forward KL is +inf (the true value).
+inf or NaN logits are not supported.

Top-k teacher mode: `teacher_topk` keeps the teacher's k largest log-probabilities
(of the full softmax at the given temperature, NOT renormalized) and their indices,
so teacher outputs can be stored at k ≪ V. `Divergence.topk` evaluates any divergence
above on the (k+1)-outcome partition {top-1, …, top-k, rest}: the
teacher's tail bucket holds 1 − Σ top-k mass, the student's tail bucket its exact
mass outside the teacher's top-k (a logsumexp over the rest of its vocabulary).
Both tails are floored at TOPK_TAIL_FLOOR (the float32 resolution of 1 − Σp), so
k = V reproduces the full divergence. All divergences here are f-divergences, so by
the data-processing inequality the bucketed value is a lower bound of the full one
that grows monotonically with k (up to the floor, ≲1e-5 nats).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

NAMES = (
  "forward_kl",
  "reverse_kl",
  "generalized_jsd",
  "skew_kl",
  "skew_reverse_kl",
  "total_variation",
)

# Tail masses below this are rounding noise of 1 - sum(top-k probs) in float32.
TOPK_TAIL_FLOOR = 1e-6

# --------------------------------------------------------------------------- checks


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_unit_interval(name: str, value) -> None:
  """Eager range check for a config float; traced values are left unchecked."""
  if not _is_concrete(value):
    return
  v = float(value)
  if not 0.0 <= v <= 1.0 or math.isnan(v):
    raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")


def _check_temperature(temperature) -> None:
  if not _is_concrete(temperature):
    return
  t = float(temperature)
  if not t > 0.0 or math.isinf(t):
    raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")


def _check_pair(student_logits, teacher_logits) -> None:
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
  the two branches and the where-chains costs 1.35–1.4× the closed form's time and 1.6–2×
  its memory traffic, over the whole vocabulary (experiments/benchmarks/loss_grad.py).
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
  if _is_concrete(alpha):
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

  if _is_concrete(beta):
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


# The parameters each divergence takes, with their defaults (the one place they are written).
PARAMS = {
  "forward_kl": {},
  "reverse_kl": {},
  "generalized_jsd": {"beta": 0.5, "normalized": False},
  "skew_kl": {"alpha": 0.1},
  "skew_reverse_kl": {"alpha": 0.1},
  "total_variation": {},
}


@dataclasses.dataclass(frozen=True)
class Divergence:
  """A divergence with its parameters bound and checked (`get` makes one).

  Hashable, so it can be a static argument of a jitted function. Calling it evaluates the
  divergence from full logits; `topk` evaluates it from a top-k teacher (see the module
  docstring). `kw` holds every parameter, defaults filled in, as sorted (name, value) pairs.
  """

  name: str
  kw: tuple = ()

  def __call__(self, *, student_logits, teacher_logits, temperature=1.0) -> jax.Array:
    _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    return self.on_logprobs(log_probs(student_logits, temperature),
                            log_probs(teacher_logits, temperature))

  def topk(self, *, student_logits, topk_logprobs, topk_indices, temperature=1.0) -> jax.Array:
    """From the teacher's top-k log-probs: a lower bound of the full value, exact at k = V."""
    return self.on_logprobs(
      *topk_bucket_logprobs(student_logits, topk_logprobs, topk_indices, temperature))

  def on_logprobs(self, ls: jax.Array, lt: jax.Array) -> jax.Array:
    """The divergence between normalized student and teacher log-probs [..., V]."""
    kw = dict(self.kw)
    if self.name == "forward_kl":
      return _kl(lt, ls)
    if self.name == "reverse_kl":
      return _kl(ls, lt)
    if self.name == "total_variation":
      return _tv_lp(ls, lt)
    if self.name == "generalized_jsd":
      return _jsd_lp(ls, lt, kw["beta"], kw["normalized"])
    if self.name == "skew_kl":
      return _skew_lp(ls, lt, kw["alpha"])
    return _skew_lp(lt, ls, kw["alpha"])  # skew_reverse_kl: KL(S‖αS + (1−α)T), roles swapped


def get(name: str, **kw) -> Divergence:
  """The divergence called `name` (one of NAMES) with parameters `kw` bound and checked.

  Unknown names and parameters, and β or α outside [0, 1], raise ValueError here, once,
  not at every trace. The result is called as f(*, student_logits, teacher_logits,
  temperature=1.0) -> f32[...].
  """
  if name not in NAMES:
    raise ValueError(f"unknown divergence {name!r}; valid names: {', '.join(NAMES)}.")
  allowed = PARAMS[name]
  unknown = set(kw) - set(allowed)
  if unknown:
    raise ValueError(
      f"divergence {name!r} takes parameters {sorted(allowed) or 'none'}, got {sorted(unknown)}."
    )
  kw = {**allowed, **kw}
  for key in ("beta", "alpha"):
    if key in kw:
      _check_unit_interval(key, kw[key])
  if "normalized" in kw:
    kw["normalized"] = bool(kw["normalized"])
  return Divergence(name, tuple(sorted(kw.items())))


# ------------------------------------------------------------------- public API
# The named functions are `get(name, **kw)` called at once; traced β/α are allowed here.


def forward_kl(*, student_logits, teacher_logits, temperature=1.0) -> jax.Array:
  """KL(teacher‖student) per position, in nats."""
  return get("forward_kl")(student_logits=student_logits, teacher_logits=teacher_logits,
                           temperature=temperature)


def reverse_kl(*, student_logits, teacher_logits, temperature=1.0) -> jax.Array:
  """KL(student‖teacher) per position, in nats."""
  return get("reverse_kl")(student_logits=student_logits, teacher_logits=teacher_logits,
                           temperature=temperature)


def generalized_jsd(
  *, student_logits, teacher_logits, beta=PARAMS["generalized_jsd"]["beta"], temperature=1.0,
  normalized=False
) -> jax.Array:
  """β·KL(T‖M) + (1−β)·KL(S‖M) with M = βT + (1−β)S (GKD paper), per position.

  Computed in log space: log M = logaddexp(log β + log T, log(1−β) + log S).
  β = 0 returns forward_kl and β = 1 reverse_kl exactly (the API contract). Note that
  JSD(β) → 0 at both ends (JSD(β)/β → forward KL, JSD(β)/(1−β) → reverse KL), so the
  plain loss jumps at β ∈ {0, 1}. `normalized=True` divides by β(1−β), which makes
  β = 0 and β = 1 the continuous limits of the interior values.
  """
  return get("generalized_jsd", beta=beta, normalized=normalized)(
    student_logits=student_logits, teacher_logits=teacher_logits, temperature=temperature)


def skew_kl(*, student_logits, teacher_logits, alpha=PARAMS["skew_kl"]["alpha"],
            temperature=1.0) -> jax.Array:
  """KL(T‖αT + (1−α)S): α = 0 is forward_kl, α = 1 is 0; bounded by −log α."""
  return get("skew_kl", alpha=alpha)(student_logits=student_logits,
                                     teacher_logits=teacher_logits, temperature=temperature)


def skew_reverse_kl(*, student_logits, teacher_logits, alpha=PARAMS["skew_reverse_kl"]["alpha"],
                    temperature=1.0) -> jax.Array:
  """KL(S‖αS + (1−α)T): α = 0 is reverse_kl, α = 1 is 0; bounded by −log α."""
  return get("skew_reverse_kl", alpha=alpha)(student_logits=student_logits,
                                             teacher_logits=teacher_logits, temperature=temperature)


def total_variation(*, student_logits, teacher_logits, temperature=1.0) -> jax.Array:
  """½·Σ|T − S| per position, in [0, 1]."""
  return get("total_variation")(student_logits=student_logits, teacher_logits=teacher_logits,
                                temperature=temperature)


# ------------------------------------------------------------------ top-k teacher


def teacher_topk(teacher_logits, k: int, temperature=1.0) -> tuple[jax.Array, jax.Array]:
  """The teacher's k most likely tokens: (log-probs f32[..., k], indices int32[..., k]).

  The log-probs are those of the full softmax of teacher_logits / temperature (not
  renormalized over the k tokens), so 1 − Σ exp(log-probs) is the tail mass.
  """
  _check_temperature(temperature)
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
  _check_temperature(temperature)
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
