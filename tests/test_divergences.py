"""Divergences against an independent float64 NumPy reference, plus their invariants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkd import divergences as D

# ------------------------------------------------------------ float64 reference


def np_logprobs(logits, temperature=1.0):
  x = np.asarray(logits, np.float64) / temperature
  m = np.max(x, axis=-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))  # masked entries stay -inf


def np_kl(lp, lq):
  """KL(p‖q) from log-probs; log space so one-hot-like pairs don't underflow to inf."""
  with np.errstate(invalid="ignore"):
    terms = np.where(lp > -np.inf, np.exp(lp) * (lp - lq), 0.0)
  return terms.sum(-1)


def np_log_mix(w, lp, lq):
  with np.errstate(divide="ignore"):
    return np.logaddexp(np.log(w) + lp, np.log(1 - w) + lq)


def np_divergence(name, ls, lt, beta=0.5, alpha=0.1, normalized=False):
  """Reference divergence from float64 student/teacher log-probs."""
  if name == "forward_kl":
    return np_kl(lt, ls)
  if name == "reverse_kl":
    return np_kl(ls, lt)
  if name == "total_variation":
    return 0.5 * np.abs(np.exp(lt) - np.exp(ls)).sum(-1)
  if name == "skew_kl":
    return np_kl(lt, np_log_mix(alpha, lt, ls))
  if name == "skew_reverse_kl":
    return np_kl(ls, np_log_mix(alpha, ls, lt))
  assert name == "generalized_jsd"
  if beta == 0:
    return np_kl(lt, ls)
  if beta == 1:
    return np_kl(ls, lt)
  lm = np_log_mix(beta, lt, ls)
  value = beta * np_kl(lt, lm) + (1 - beta) * np_kl(ls, lm)
  return value / (beta * (1 - beta)) if normalized else value


CASES = [
  ("forward_kl", {}),
  ("reverse_kl", {}),
  ("generalized_jsd", {"beta": 0.5}),
  ("generalized_jsd", {"beta": 0.1}),
  ("generalized_jsd", {"beta": 0.9, "normalized": True}),
  ("generalized_jsd", {"beta": 0.0}),
  ("generalized_jsd", {"beta": 1.0}),
  ("skew_kl", {"alpha": 0.1}),
  ("skew_kl", {"alpha": 0.7}),
  ("skew_reverse_kl", {"alpha": 0.1}),
  ("skew_reverse_kl", {"alpha": 0.7}),
  ("total_variation", {}),
]
IDS = [f"{n}-{p}" for n, p in CASES]


def logits_pair(shape, scale=3.0, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=shape) * scale).astype(np.float32), (
    rng.normal(size=shape) * scale
  ).astype(np.float32)


def call(name, params, s, t, temperature=1.0):
  return D.get(name, **params)(student_logits=s, teacher_logits=t, temperature=temperature)


# -------------------------------------------------------------------- reference


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_matches_numpy_reference(name, params):
  s, t = logits_pair((4, 10))
  s[..., 3] = t[..., 3] = -np.inf  # a masked vocabulary entry
  for temperature in (0.5, 1.0, 2.5):
    got = call(name, params, s, t, temperature)
    assert got.dtype == jnp.float32 and got.shape == (4,)
    want = np_divergence(name, np_logprobs(s, temperature), np_logprobs(t, temperature), **params)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_kl_argument_order():
  """Forward KL is KL(teacher‖student): a closed form on two Bernoullis pins the order."""
  p_t, p_s = 0.9, 0.4
  t = np.log([p_t, 1 - p_t]).astype(np.float32)
  s = np.log([p_s, 1 - p_s]).astype(np.float32)
  kl_ts = p_t * math.log(p_t / p_s) + (1 - p_t) * math.log((1 - p_t) / (1 - p_s))
  kl_st = p_s * math.log(p_s / p_t) + (1 - p_s) * math.log((1 - p_s) / (1 - p_t))
  assert abs(kl_ts - kl_st) > 0.1
  np.testing.assert_allclose(D.forward_kl(student_logits=s, teacher_logits=t), kl_ts, rtol=1e-5)
  np.testing.assert_allclose(D.reverse_kl(student_logits=s, teacher_logits=t), kl_st, rtol=1e-5)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_gradient_matches_finite_differences(name, params):
  # Both sides: the KL's gradient is written out (not traced), so the teacher's is checked too.
  s, t = logits_pair((4, 10), scale=1.5, seed=1)
  temperature = 1.7
  grads = jax.grad(lambda x, y: call(name, params, x, y, temperature).sum(), argnums=(0, 1))(
      jnp.asarray(s), jnp.asarray(t))

  def ref(x, y):
    return np_divergence(name, np_logprobs(x, temperature), np_logprobs(y, temperature),
                         **params).sum()

  h = 1e-6
  for side, grad in enumerate(grads):
    point, fd = [s.astype(np.float64), t.astype(np.float64)], np.zeros(s.shape)
    for idx in np.ndindex(*s.shape):
      up, down = [a.copy() for a in point], [a.copy() for a in point]
      up[side][idx] += h
      down[side][idx] -= h
      fd[idx] = (ref(*up) - ref(*down)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=2e-3, atol=2e-5, err_msg=f"argument {side}")


# ------------------------------------------------------------------- numerics


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_masked_vocab_values_and_zero_grads(name, params):
  s, t = logits_pair((4, 10), seed=2)
  s[:, [1, 5]] = t[:, [1, 5]] = -np.inf
  f = lambda x: call(name, params, x, t).sum()
  value, grad = jax.value_and_grad(f)(jnp.asarray(s))
  assert np.isfinite(value) and np.isfinite(grad).all()
  assert np.all(np.asarray(grad)[:, [1, 5]] == 0)
  # Equal to the divergence on the unmasked sub-vocabulary.
  keep = [0, 2, 3, 4, 6, 7, 8, 9]
  want = np_divergence(name, np_logprobs(s[:, keep]), np_logprobs(t[:, keep]), **params)
  np.testing.assert_allclose(call(name, params, s, t), want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_extreme_and_one_hot_logits(name, params):
  s = np.full((4, 10), -1e4, np.float32)
  t = np.full((4, 10), -1e4, np.float32)
  s[0, 0], t[0, 1] = 1e4, 1e4  # disjoint one-hots
  s[1, 2], t[1, 2] = 1e4, 1e4  # identical one-hots
  s[2], t[2] = np.linspace(-1e4, 1e4, 10), np.linspace(1e4, -1e4, 10)
  s[3, :2], t[3, 1:3] = 1e4, 1e4  # overlapping two-hots
  f = lambda x: call(name, params, x, t, 0.7).sum()
  value, grad = jax.value_and_grad(f)(jnp.asarray(s))
  assert np.isfinite(value) and np.isfinite(grad).all()
  got = call(name, params, s, t, 0.7)
  want = np_divergence(name, np_logprobs(s, 0.7), np_logprobs(t, 0.7), **params)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert abs(float(got[1])) < 1e-6


@pytest.mark.parametrize("name,params", CASES[:4] + CASES[-2:], ids=IDS[:4] + IDS[-2:])
def test_bf16_inputs(name, params):
  s, t = logits_pair((4, 10), seed=3)
  s16, t16 = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
  got = call(name, params, s16, t16, 1.3)
  assert got.dtype == jnp.float32
  ls = np_logprobs(np.asarray(s16, np.float64), 1.3)
  lt = np_logprobs(np.asarray(t16, np.float64), 1.3)
  np.testing.assert_allclose(got, np_divergence(name, ls, lt, **params), rtol=2e-5, atol=2e-6)
  grad = jax.grad(lambda x: call(name, params, x, t16).sum())(s16)
  assert grad.dtype == jnp.bfloat16 and np.isfinite(np.asarray(grad, np.float32)).all()


# ------------------------------------------------------------------ invariants


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_nonnegative_and_zero_iff_equal(name, params):
  s, t = logits_pair((64, 10), scale=2.0, seed=4)
  near = t + 1e-3 * np.random.default_rng(5).normal(size=t.shape).astype(np.float32)
  assert np.all(np.asarray(call(name, params, s, t)) > 1e-4)
  assert np.all(np.asarray(call(name, params, near, t)) >= 0)
  np.testing.assert_allclose(call(name, params, t, t), 0.0, atol=1e-6)
  # Same distribution, different logits (a shift): still zero.
  np.testing.assert_allclose(call(name, params, t + 5.0, t), 0.0, atol=2e-6)


def test_upper_bounds():
  s, t = logits_pair((64, 10), scale=6.0, seed=6)
  for beta in (0.05, 0.3, 0.5, 0.8):
    h = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)  # binary entropy
    jsd = np.asarray(D.generalized_jsd(student_logits=s, teacher_logits=t, beta=beta))
    assert jsd.max() <= h + 1e-6 and jsd.max() > 0.5 * h  # tight-ish for disjoint-ish pairs
  for alpha in (0.05, 0.5):
    for f in (D.skew_kl, D.skew_reverse_kl):
      assert np.asarray(f(student_logits=s, teacher_logits=t, alpha=alpha)).max() <= -math.log(
        alpha
      ) + 1e-6
  assert np.asarray(D.total_variation(student_logits=s, teacher_logits=t)).max() <= 1 + 1e-6


def test_jsd_half_is_symmetric_and_others_are_not():
  s, t = logits_pair((64, 10), seed=7)
  a = D.generalized_jsd(student_logits=s, teacher_logits=t, beta=0.5)
  b = D.generalized_jsd(student_logits=t, teacher_logits=s, beta=0.5)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  j02 = D.generalized_jsd(student_logits=s, teacher_logits=t, beta=0.2)
  c = D.generalized_jsd(student_logits=t, teacher_logits=s, beta=0.2)
  assert np.abs(np.asarray(j02) - c).max() > 1e-3
  # JSD(β)(S, T) = JSD(1−β)(T, S): the two mixture weights swap with the roles.
  d = D.generalized_jsd(student_logits=t, teacher_logits=s, beta=0.8)
  np.testing.assert_allclose(j02, d, rtol=1e-5)


def test_jsd_endpoints_are_exact_kls_and_the_plain_loss_jumps():
  s, t = logits_pair((64, 10), seed=8)
  fkl = D.forward_kl(student_logits=s, teacher_logits=t)
  rkl = D.reverse_kl(student_logits=s, teacher_logits=t)
  for normalized in (False, True):
    j0 = D.generalized_jsd(student_logits=s, teacher_logits=t, beta=0.0, normalized=normalized)
    j1 = D.generalized_jsd(student_logits=s, teacher_logits=t, beta=1.0, normalized=normalized)
    np.testing.assert_array_equal(j0, fkl)
    np.testing.assert_array_equal(j1, rkl)
  # The documented discontinuity: just inside (0, 1) the plain JSD is ~0.
  tiny = D.generalized_jsd(student_logits=s, teacher_logits=t, beta=1e-6)
  assert np.asarray(tiny).max() < 1e-4 * np.asarray(fkl).min()


@pytest.mark.parametrize("end", ["beta_to_0", "beta_to_1"])
def test_jsd_limits(end):
  """JSD(β)/β → KL(T‖S) at β → 0 and JSD(β)/(1−β) → KL(S‖T) at β → 1."""
  s, t = logits_pair((64, 10), scale=1.0, seed=9)
  fkl = np.asarray(D.forward_kl(student_logits=s, teacher_logits=t))
  rkl = np.asarray(D.reverse_kl(student_logits=s, teacher_logits=t))
  want, other = (fkl, rkl) if end == "beta_to_0" else (rkl, fkl)
  assert np.abs(want - other).max() > 0.05  # the two limits are distinguishable here
  errors = []
  for eps in (1e-2, 1e-3, 1e-4):
    beta = eps if end == "beta_to_0" else 1 - eps
    jsd = np.asarray(D.generalized_jsd(student_logits=s, teacher_logits=t, beta=beta))
    norm = np.asarray(
      D.generalized_jsd(student_logits=s, teacher_logits=t, beta=beta, normalized=True)
    )
    np.testing.assert_allclose(norm, jsd / (beta * (1 - beta)), rtol=1e-5)
    errors.append(np.abs(jsd / eps - want).max())
  # Converging at rate O(eps): each tenfold smaller eps shrinks the error ~tenfold.
  assert errors[0] / errors[1] > 5 and errors[1] / errors[2] > 5
  assert errors[2] < 0.02 * want.max()


def test_skew_limits():
  s, t = logits_pair((64, 10), seed=10)
  fkl = D.forward_kl(student_logits=s, teacher_logits=t)
  rkl = D.reverse_kl(student_logits=s, teacher_logits=t)
  np.testing.assert_array_equal(D.skew_kl(student_logits=s, teacher_logits=t, alpha=0.0), fkl)
  skew_r0 = D.skew_reverse_kl(student_logits=s, teacher_logits=t, alpha=0.0)
  np.testing.assert_array_equal(skew_r0, rkl)
  for f in (D.skew_kl, D.skew_reverse_kl):
    np.testing.assert_array_equal(f(student_logits=s, teacher_logits=t, alpha=1.0), 0.0)
    near1 = np.asarray(f(student_logits=s, teacher_logits=t, alpha=1 - 1e-4))
    assert near1.max() < 1e-3  # continuous at α = 1
  # Continuous at α = 0 (checked on moderate logits: the skew is capped at −log α)
  # and decreasing in α.
  s1, t1 = logits_pair((64, 10), scale=1.0, seed=10)
  for f, kl in ((D.skew_kl, D.forward_kl), (D.skew_reverse_kl, D.reverse_kl)):
    near0 = f(student_logits=s1, teacher_logits=t1, alpha=1e-5)
    np.testing.assert_allclose(near0, kl(student_logits=s1, teacher_logits=t1), rtol=1e-3)
  values = [
    np.asarray(D.skew_kl(student_logits=s, teacher_logits=t, alpha=a)) for a in (0.0, 0.2, 0.6)
  ]
  assert np.all(values[0] > values[1]) and np.all(values[1] > values[2])


def test_traced_parameters_under_jit():
  s, t = logits_pair((4, 10), seed=11)

  @jax.jit
  def jsd(beta):
    return D.generalized_jsd(student_logits=s, teacher_logits=t, beta=beta, normalized=True)

  for beta in (0.0, 0.3, 1.0):
    want = D.generalized_jsd(student_logits=s, teacher_logits=t, beta=beta, normalized=True)
    np.testing.assert_allclose(jsd(beta), want, rtol=1e-6)
  skew = jax.jit(lambda a: D.skew_reverse_kl(student_logits=s, teacher_logits=t, alpha=a))
  for alpha in (0.0, 0.4, 1.0):
    want = D.skew_reverse_kl(student_logits=s, teacher_logits=t, alpha=alpha)
    np.testing.assert_allclose(skew(alpha), want, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors():
  s, t = logits_pair((4, 10))
  with pytest.raises(ValueError, match="vocabulary sizes differ"):
    D.forward_kl(student_logits=s, teacher_logits=t[:, :9])
  for beta in (-0.1, 1.5, float("nan")):
    with pytest.raises(ValueError, match="beta"):
      D.generalized_jsd(student_logits=s, teacher_logits=t, beta=beta)
    with pytest.raises(ValueError, match="beta"):
      D.get("generalized_jsd", beta=beta)
  for alpha in (-1e-3, 1.01):
    with pytest.raises(ValueError, match="alpha"):
      D.skew_kl(student_logits=s, teacher_logits=t, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
      D.get("skew_reverse_kl", alpha=alpha)
  for temperature in (0.0, -1.0, float("inf")):
    with pytest.raises(ValueError, match="temperature"):
      D.reverse_kl(student_logits=s, teacher_logits=t, temperature=temperature)
  with pytest.raises(ValueError, match="unknown divergence 'kl'"):
    D.get("kl")
  with pytest.raises(ValueError, match="takes parameters"):
    D.get("forward_kl", beta=0.5)
  with pytest.raises(ValueError, match="top-k size"):
    D.teacher_topk(t, 0)
  with pytest.raises(ValueError, match="top-k size"):
    D.teacher_topk(t, 11)


def test_get_binds_defaults_once():
  assert D.get("generalized_jsd") == D.get("generalized_jsd", beta=0.5, normalized=False)
  assert D.get("generalized_jsd", beta=0.9) != D.get("generalized_jsd")
  assert dict(D.get("skew_kl").kw) == {"alpha": 0.1}
  s, t = logits_pair((4, 10))
  np.testing.assert_allclose(  # the named function's default β is the bound default
    D.get("generalized_jsd")(student_logits=s, teacher_logits=t),
    D.generalized_jsd(student_logits=s, teacher_logits=t))


def test_get_names():
  s, t = logits_pair((4, 10))
  for name in D.NAMES:
    f = D.get(name)
    assert f.name == name and hash(f) == hash(D.get(name))  # hashable: a static jit argument
    np.testing.assert_allclose(
      f(student_logits=s, teacher_logits=t), getattr(D, name)(student_logits=s, teacher_logits=t)
    )


# --------------------------------------------------------------------- top-k


def np_topk_bucket(s, t, k, temperature=1.0):
  """float64 reference: both distributions collapsed to {top-1..top-k, rest}, as log-probs.

  Tails are the exact masses outside the top-k, floored as documented.
  """
  ps, pt = np.exp(np_logprobs(s, temperature)), np.exp(np_logprobs(t, temperature))
  order = np.argsort(-pt, axis=-1, kind="stable")
  top, rest = order[..., :k], order[..., k:]
  tails = [
    np.maximum(np.take_along_axis(p, rest, -1).sum(-1, keepdims=True), D.TOPK_TAIL_FLOOR)
    for p in (ps, pt)
  ]
  with np.errstate(divide="ignore"):
    return tuple(
      np.log(np.concatenate([np.take_along_axis(p, top, -1), tail], -1))
      for p, tail in zip((ps, pt), tails)
    )


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_topk_matches_reference_and_full_at_k_equals_v(name, params):
  s, t = logits_pair((4, 10), seed=12)
  temperature = 1.5
  full = call(name, params, s, t, temperature)
  prev = None
  for k in (1, 3, 6, 10):
    lp, idx = D.teacher_topk(t, k, temperature)
    assert lp.shape == idx.shape == (4, k) and idx.dtype == jnp.int32
    got = D.get(name, **params).topk(
      student_logits=s, topk_logprobs=lp, topk_indices=idx, temperature=temperature
    )
    ps_b, pt_b = np_topk_bucket(s, t, k, temperature)
    np.testing.assert_allclose(got, np_divergence(name, ps_b, pt_b, **params), rtol=1e-4, atol=2e-5)
    got = np.asarray(got)
    assert np.all(got <= np.asarray(full) + 2e-5)  # data-processing inequality
    if prev is not None:
      assert np.all(got >= prev - 2e-5)  # monotone in k
    prev = got
  np.testing.assert_allclose(prev, full, rtol=1e-5, atol=2e-6)


def test_topk_masked_vocab_and_grads():
  s, t = logits_pair((4, 10), seed=13)
  masked = [0, 4, 7, 9]
  s[:, masked] = t[:, masked] = -np.inf  # 6 real tokens

  @jax.jit
  def all_names(x, lp, idx):  # one compile per k for every divergence
    out = []
    for name in D.NAMES:
      f = D.get(name).topk
      g = lambda x: f(student_logits=x, topk_logprobs=lp, topk_indices=idx).sum()
      out.append(jax.value_and_grad(g)(x))
    return out

  full = [call(name, {}, s, t).sum() for name in D.NAMES]
  for k in (2, 8):  # k = 8 selects masked entries too
    lp, idx = D.teacher_topk(t, k)
    for name, want, (value, grad) in zip(D.NAMES, full, all_names(jnp.asarray(s), lp, idx)):
      assert np.isfinite(value) and np.isfinite(grad).all(), (name, k)
      assert np.all(np.asarray(grad)[:, masked] == 0)
      if k == 8:
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)
      else:
        assert value <= want + 1e-5


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
def test_absent_topk_entries_count_as_unknown_not_as_zero_probability(name, params):
  # A black-box teacher may return fewer than k tokens: −inf slots are absent. The value must
  # equal the top-3 one (the student's mass on the missing 4th token stays in its tail), not
  # treat the 4th token as one the teacher never emits; no targets at all give 0.
  s, t = logits_pair((4, 10), seed=14)
  lp3, idx3 = D.teacher_topk(t, 3)
  _, idx4 = D.teacher_topk(t, 4)
  lp4 = jnp.concatenate([lp3, jnp.full((4, 1), -jnp.inf)], -1)
  f = D.get(name, **params).topk
  want = f(student_logits=s, topk_logprobs=lp3, topk_indices=idx3)
  np.testing.assert_allclose(f(student_logits=s, topk_logprobs=lp4, topk_indices=idx4), want,
                             rtol=1e-6, atol=1e-7)
  shuffled = [2, 3, 0, 1]  # the absent slot first: order does not matter
  np.testing.assert_allclose(
      f(student_logits=s, topk_logprobs=lp4[:, shuffled], topk_indices=idx4[:, shuffled]), want,
      rtol=1e-6, atol=1e-7)
  none = f(student_logits=s, topk_logprobs=jnp.full((4, 2), -jnp.inf), topk_indices=idx4[:, :2])
  np.testing.assert_allclose(none, 0.0, atol=1e-7)
