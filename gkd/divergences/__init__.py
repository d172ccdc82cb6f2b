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

import jax

from gkd.divergences.core import (_jsd_lp, _kl, _skew_lp, _tv_lp, check_pair, check_temperature,
                                  check_unit_interval, is_concrete, log_probs)
from gkd.divergences.topk import TOPK_TAIL_FLOOR, teacher_topk, topk_bucket_logprobs

__all__ = ["NAMES", "PARAMS", "TOPK_TAIL_FLOOR", "Divergence", "forward_kl", "generalized_jsd",
           "get", "is_concrete", "check_pair", "check_temperature", "check_unit_interval",
           "log_probs", "reverse_kl", "skew_kl", "skew_reverse_kl", "teacher_topk",
           "topk_bucket_logprobs", "total_variation"]

NAMES = (
  "forward_kl",
  "reverse_kl",
  "generalized_jsd",
  "skew_kl",
  "skew_reverse_kl",
  "total_variation",
)


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
    check_temperature(temperature)
    check_pair(student_logits, teacher_logits)
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
      check_unit_interval(key, kw[key])
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
