"""The distillation objective against float64 NumPy, and the chunked path against the plain one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkd import divergences as D
from gkd import objectives as O

B, T, V, DS, DT = 3, 10, 17, 8, 12


def np_logprobs(x, temperature=1.0):
  x = np.asarray(x, np.float64) / temperature
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_jsd(zs, zt, beta, temperature):
  """Generalized JSD straight from its definition, in float64 probabilities."""
  ps, pt = np.exp(np_logprobs(zs, temperature)), np.exp(np_logprobs(zt, temperature))
  m = beta * pt + (1 - beta) * ps
  kl = lambda p, q: (p * np.log(p / q)).sum(-1)
  return beta * kl(pt, m) + (1 - beta) * kl(ps, m)


def np_masked_reduce(values, mask, reduction):
  values, mask = np.asarray(values, np.float64), np.asarray(mask, bool)
  if reduction == "token":
    return values[mask].sum(), mask.sum()
  total, weight = 0.0, 0
  for v, m in zip(values, mask):
    if m.any():
      total += v[m].mean()
      weight += 1
  return total, weight


def batch(seed=0):
  rng = np.random.default_rng(seed)
  hs = rng.normal(size=(B, T, DS)).astype(np.float32)
  ws = (rng.normal(size=(DS, V)) * 0.7).astype(np.float32)
  ht = rng.normal(size=(B, T, DT)).astype(np.float32)
  wt = (rng.normal(size=(DT, V)) * 0.7).astype(np.float32)
  labels = rng.integers(0, V, size=(B, T)).astype(np.int32)
  lengths = np.array([7, 0, 10])  # row 1 is all masked
  mask = np.arange(T)[None] < lengths[:, None]
  mask[0, :2] = False  # a prompt
  labels[~mask] = -100  # ignored positions may hold anything
  return hs, ws, ht, wt, labels, mask


# ------------------------------------------------------------------ reduction


@pytest.mark.parametrize("reduction", O.REDUCTIONS)
def test_masked_reduce_matches_numpy(reduction):
  values = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0, 0, 0], [0] * 6, [1] * 6, [0, 0, 0, 1, 0, 1]], bool)
  values[1, 2] = np.nan  # masked garbage must not leak
  values[0, 3] = np.inf
  total, weight = O.masked_reduce(values, mask, reduction)
  want_total, want_weight = np_masked_reduce(values, mask, reduction)
  np.testing.assert_allclose(total, want_total, rtol=1e-6)
  assert float(weight) == want_weight == (3 if reduction == "sequence" else 10)


def test_masked_reduce_sequence_and_token_differ_and_errors():
  values = np.array([[1.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1, 1], [1, 0, 0, 0]], bool)
  seq = np.divide(*O.masked_reduce(values, mask, "sequence"))
  tok = np.divide(*O.masked_reduce(values, mask, "token"))
  np.testing.assert_allclose([seq, tok], [3.0, 9.0 / 5.0], rtol=1e-6)
  with pytest.raises(ValueError, match="reduction"):
    O.masked_reduce(values, mask, "mean")
  with pytest.raises(ValueError, match="one shape"):
    O.masked_reduce(values, mask[:, :3])


# --------------------------------------------------------------- plain loss


def objective(divergence="generalized_jsd", divergence_kw=None, **kw):
  return O.Objective(divergence=D.get(divergence, **(divergence_kw or {})), **kw)


def plain_loss(zs, zt, labels, mask, weight=None, **kw):
  return O.distillation_loss(zs, zt, labels, mask, objective(**kw), weight=weight)


def chunked_loss(hs, ws, ht, wt, labels, mask, weight=None, chunk_size=128, **kw):
  kw["chunk_size"] = chunk_size
  return O.chunked_distillation_loss(hs, ws, ht, wt, labels, mask, objective(**kw), weight=weight)


@pytest.mark.parametrize("reduction", O.REDUCTIONS)
def test_distillation_loss_matches_numpy(reduction):
  hs, ws, ht, wt, labels, mask = batch()
  zs, zt = hs @ ws, ht @ wt
  beta, temperature, alpha = 0.3, 2.0, 0.25
  loss, aux = plain_loss(
    zs, zt, labels, mask, divergence_kw={"beta": beta}, temperature=temperature,
    alpha=alpha, reduction=reduction,
  )
  div = np_jsd(zs, zt, beta, temperature)
  ls1 = np_logprobs(zs)
  ce = -np.take_along_axis(ls1, np.clip(labels, 0, V - 1)[..., None], -1)[..., 0]
  div_total, weight = np_masked_reduce(div, mask, reduction)
  ce_total, _ = np_masked_reduce(ce, mask, reduction)
  want = (alpha * temperature**2 * div_total + (1 - alpha) * ce_total) / weight
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux["divergence"], div_total / weight, rtol=1e-5)
  np.testing.assert_allclose(aux["hard_ce"], ce_total / weight, rtol=1e-5)
  assert float(aux["weight"]) == weight and float(aux["num_tokens"]) == mask.sum()
  assert all(v.dtype == jnp.float32 and v.shape == () for v in aux.values())


def test_global_weight_empty_batch_and_alpha_ends():
  hs, ws, ht, wt, labels, mask = batch()
  zs, zt = hs @ ws, ht @ wt
  local, aux = plain_loss(zs, zt, labels, mask)
  scaled, _ = plain_loss(zs, zt, labels, mask, weight=4 * aux["weight"])
  np.testing.assert_allclose(scaled, local / 4, rtol=1e-6)
  # alpha=1 is pure distillation, alpha=0 pure CE.
  fwd = lambda **kw: plain_loss(zs, zt, labels, mask, divergence="forward_kl", **kw)
  loss_t3, aux_t3 = fwd(alpha=1.0, temperature=3.0)
  np.testing.assert_allclose(loss_t3, 9 * aux_t3["divergence"], rtol=1e-6)  # the T² factor
  np.testing.assert_allclose(fwd(alpha=0.0)[0], fwd()[1]["hard_ce"], rtol=1e-6)
  # An all-masked batch: loss 0 and finite gradients.
  empty = np.zeros_like(mask)
  value, grad = jax.value_and_grad(lambda z: plain_loss(z, zt, labels, empty)[0])(zs)
  assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


def test_teacher_gets_no_gradient_and_student_does():
  hs, ws, ht, wt, labels, mask = batch()
  zs, zt = hs @ ws, ht @ wt
  f = lambda zs, zt: plain_loss(zs, zt, labels, mask, alpha=0.5)[0]
  gs, gt = jax.grad(f, argnums=(0, 1))(zs, zt)
  assert np.all(np.asarray(gt) == 0)
  assert np.abs(np.asarray(gs)[mask]).max() > 1e-4 and np.all(np.asarray(gs)[~mask] == 0)


def test_teacher_topk_modes():
  hs, ws, ht, wt, labels, mask = batch()
  zs, zt = hs @ ws, ht @ wt
  kw = dict(divergence="reverse_kl", temperature=1.5, alpha=0.7)
  full, _ = plain_loss(zs, zt, labels, mask, **kw)
  at_v, _ = plain_loss(zs, zt, labels, mask, teacher_topk=V, **kw)
  np.testing.assert_allclose(at_v, full, rtol=1e-5)
  top4, _ = plain_loss(zs, zt, labels, mask, teacher_topk=4, **kw)
  assert float(top4) < float(full)  # the bucketed divergence is a lower bound
  stored = D.teacher_topk(zt, 4, temperature=1.5)
  from_stored, _ = plain_loss(zs, stored, labels, mask, **kw)
  np.testing.assert_allclose(from_stored, top4, rtol=1e-6)


def test_bf16_logits():
  hs, ws, ht, wt, labels, mask = batch()
  zs, zt = jnp.asarray(hs @ ws, jnp.bfloat16), jnp.asarray(ht @ wt, jnp.bfloat16)
  loss, aux = plain_loss(zs, zt, labels, mask, alpha=0.5)
  ref, _ = plain_loss(np.asarray(zs, np.float32), np.asarray(zt, np.float32), labels,
                               mask, alpha=0.5)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, ref, rtol=1e-6)


def test_bad_arguments():
  hs, ws, ht, wt, labels, mask = batch()
  zs, zt = hs @ ws, ht @ wt
  cases = [
    (dict(alpha=1.5), "alpha"),
    (dict(temperature=0.0), "temperature"),
    (dict(reduction="mean"), "reduction"),
    (dict(divergence="kl"), "unknown divergence"),
    (dict(divergence_kw={"beta": 2.0}), "beta"),
    (dict(teacher_topk=-1), "teacher_topk"),
  ]
  for kw, match in cases:
    with pytest.raises(ValueError, match=match):
      plain_loss(zs, zt, labels, mask, **kw)
  with pytest.raises(ValueError, match="vocabulary sizes differ"):
    plain_loss(zs, zt[..., :-1], labels, mask)
  with pytest.raises(ValueError, match="labels"):
    plain_loss(zs, zt, labels[:, :-1], mask)


# ------------------------------------------------------------- chunked loss

CHUNK_CASES = [
  (dict(reduction="sequence", temperature=2.0, alpha=0.5, divergence_kw={"beta": 0.2}), 4),
  (dict(reduction="token", divergence="skew_reverse_kl", alpha=0.8), 3),
  (dict(divergence="forward_kl", teacher_topk=5, temperature=0.7), 7),
]


def test_chunk_larger_than_sequence():
  hs, ws, ht, wt, labels, mask = batch()
  plain, _ = plain_loss(hs @ ws, ht @ wt, labels, mask)
  chunked, _ = chunked_loss(hs, ws, ht, wt, labels, mask, chunk_size=64)
  np.testing.assert_allclose(chunked, plain, rtol=1e-5)


@pytest.mark.parametrize("kw,chunk", CHUNK_CASES)
def test_chunked_matches_plain(kw, chunk):
  hs, ws, ht, wt, labels, mask = batch()

  def plain(hs, ws, ht, wt):
    return plain_loss(hs @ ws, ht @ wt, labels, mask, **kw)

  def chunked(hs, ws, ht, wt):
    return chunked_loss(hs, ws, ht, wt, labels, mask, chunk_size=chunk, **kw)

  (lp, ap), gp = jax.jit(jax.value_and_grad(plain, argnums=(0, 1, 2, 3), has_aux=True))(
    hs, ws, ht, wt
  )
  (lc, ac), gc = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1, 2, 3), has_aux=True))(
    hs, ws, ht, wt
  )
  np.testing.assert_allclose(lc, lp, rtol=1e-5)
  for key in ap:
    np.testing.assert_allclose(ac[key], ap[key], rtol=1e-5, atol=1e-7)
  for a, b in zip(gc[:2], gp[:2]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert np.abs(np.asarray(gc[0])).max() > 1e-4
  assert np.all(np.asarray(gc[2]) == 0) and np.all(np.asarray(gc[3]) == 0)  # teacher frozen


def test_chunked_gradients_keep_a_bf16_students_dtype():
  # A bf16-compute student hands bf16 hidden states in; the custom VJP must return bf16
  # cotangents (float32 ones made JAX refuse the student's backward pass), close to float32's.
  hs, ws, ht, wt, labels, mask = batch()

  def grads(h):
    def total(h):
      hidden = jnp.tanh(h)  # a bf16 op before the loss, as the student's final norm is
      return chunked_loss(hidden, ws, ht, wt, labels, mask, chunk_size=3)[0]
    return jax.jit(jax.grad(total))(h)

  g16 = grads(jnp.asarray(hs, jnp.bfloat16))
  assert g16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(g16, np.float32), grads(hs), rtol=0.05, atol=2e-3)


def test_chunked_does_not_hold_full_logits():
  """XLA's buffer assignment for fwd+bwd: the chunked path stays far below one [B,T,V]."""
  b, t, d, v = 2, 256, 16, 4096
  spec = jax.ShapeDtypeStruct
  args = (spec((b, t, d), jnp.float32), spec((d, v), jnp.float32),
          spec((b, t, d), jnp.float32), spec((d, v), jnp.float32),
          spec((b, t), jnp.int32), spec((b, t), jnp.bool_))

  def temp_bytes(fn):
    step = jax.jit(jax.grad(lambda *a: fn(*a)[0], argnums=(0, 1)))
    return step.lower(*args).compile().memory_analysis().temp_size_in_bytes

  full = b * t * v * 4
  plain = temp_bytes(lambda hs, ws, ht, wt, lab, m: plain_loss(hs @ ws, ht @ wt, lab, m))
  chunked = temp_bytes(lambda *a: chunked_loss(*a, chunk_size=16))
  assert plain > 2 * full
  assert chunked < 0.5 * full


def test_chunked_reads_tied_tables_without_copying_them():
  """Tied heads arrive as embedding.T; the scan must read the [V, D] tables in place. A [D, V]
  loop operand made XLA copy the transposed table (110 MB for SmolLM2) into the loop every step:
  the teacher's, which gets no gradient, then showed up as an f32[D, V] buffer."""
  b, t, ds, dt, v = 2, 64, 16, 24, 1000
  spec = jax.ShapeDtypeStruct
  args = (spec((b, t, ds), jnp.float32), spec((v, ds), jnp.float32),
          spec((b, t, dt), jnp.float32), spec((v, dt), jnp.float32),
          spec((b, t), jnp.int32), spec((b, t), jnp.bool_))

  def loss(hs, emb_s, ht, emb_t, lab, m):
    return chunked_loss(hs, emb_s.T, ht, emb_t.T, lab, m, chunk_size=16)[0]

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile().as_text()
  assert f"f32[{v},{dt}]" in hlo  # the table itself
  assert f"f32[{dt},{v}]" not in hlo, "the teacher's table was transposed into a copy"


def test_chunked_bad_arguments():
  hs, ws, ht, wt, labels, mask = batch()
  with pytest.raises(ValueError, match="chunk_size"):
    chunked_loss(hs, ws, ht, wt, labels, mask, chunk_size=0)
  with pytest.raises(ValueError, match="vocabulary sizes differ"):
    chunked_loss(hs, ws, ht, wt[:, :-1], labels, mask)
  with pytest.raises(ValueError, match="kernels"):
    chunked_loss(hs, ws, ht, ws, labels, mask)
  with pytest.raises(ValueError, match="alpha"):
    chunked_loss(hs, ws, ht, wt, labels, mask, alpha=-0.5)


# ------------------------------------------------------------- hidden states


def test_hidden_state_loss():
  hs, ws, ht, wt, labels, mask = batch()
  proj = np.random.default_rng(2).normal(size=(DS, DT)).astype(np.float32)
  hp = hs.astype(np.float64) @ proj
  cos = (hp * ht).sum(-1) / np.linalg.norm(hp, axis=-1) / np.linalg.norm(ht, axis=-1)
  for kind, per in (("cosine", 1 - cos), ("mse", ((hp - ht) ** 2).mean(-1))):
    for reduction in O.REDUCTIONS:
      total, weight = O.hidden_state_loss(hs, ht, mask, kind=kind, projection=proj,
                                          reduction=reduction)
      want_total, want_weight = np_masked_reduce(per, mask, reduction)
      np.testing.assert_allclose(total, want_total, rtol=1e-5)
      assert float(weight) == want_weight
  # Same width, no projection; identical states give 0; teacher gets no gradient.
  total, _ = O.hidden_state_loss(ht, ht, mask)
  np.testing.assert_allclose(total, 0.0, atol=1e-5)
  g_s, g_t = jax.grad(lambda a, b: O.hidden_state_loss(a, b, mask, kind="mse")[0],
                      argnums=(0, 1))(ht * 2, ht)
  assert np.abs(np.asarray(g_s)).max() > 0 and np.all(np.asarray(g_t) == 0)
  # Zero vectors: finite values and gradients.
  zeros = np.zeros_like(ht)
  value, grad = jax.value_and_grad(lambda a: O.hidden_state_loss(a, ht, mask)[0])(zeros)
  assert np.isfinite(value) and np.isfinite(grad).all()


def test_hidden_state_loss_errors():
  hs, ws, ht, wt, labels, mask = batch()
  with pytest.raises(ValueError, match="projection of shape"):
    O.hidden_state_loss(hs, ht, mask)
  with pytest.raises(ValueError, match="projection must have shape"):
    O.hidden_state_loss(hs, ht, mask, projection=np.zeros((DT, DS), np.float32))
  with pytest.raises(ValueError, match="kind"):
    O.hidden_state_loss(ht, ht, mask, kind="l1")
