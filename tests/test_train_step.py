"""The jitted train step against independent references: loss value, accumulation, chunking."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gkd import divergences, teachers
from gkd.models import llama
from gkd.objectives import Objective
from gkd.train import defaults
from gkd.train import step as step_lib
from tests import helpers

V, P, R, B = 48, 5, 7, 4


def tiny(seed, dim=32):
  cfg = llama.LlamaConfig(vocab_size=V, dim=dim, n_layers=2, n_heads=2, n_kv_heads=1,
                          ffn_dim=64, max_seq_len=64)
  return llama.Llama(cfg, rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  prompt_len = np.array([5, 3, 1, 4])  # left-padded prompts of different lengths
  resp_len = np.array([7, 4, 1, 0])  # the last row has no response tokens at all
  prompt_mask = np.arange(P)[None] >= (P - prompt_len)[:, None]
  response_mask = np.arange(R)[None] < resp_len[:, None]
  return {"prompt_tokens": np.where(prompt_mask, rng.integers(1, V, (B, P)), 0).astype(np.int32),
          "prompt_mask": prompt_mask,
          "response_tokens": np.where(response_mask, rng.integers(1, V, (B, R)), 0).astype(np.int32),
          "response_mask": response_mask}


def _log_softmax64(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_jsd_loss(student, teacher, batch, beta):
  """Full-sequence logits from model.__call__, shifted by hand; JSD(β) in float64 NumPy."""
  tokens = np.concatenate([batch["prompt_tokens"], batch["response_tokens"]], 1)
  mask = np.concatenate([batch["prompt_mask"], batch["response_mask"]], 1)
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  ls = _log_softmax64(helpers.forward(student, tokens, attention_mask=mask))
  lt = _log_softmax64(helpers.forward(teacher, tokens, attention_mask=mask))
  ps, pt = np.exp(ls), np.exp(lt)
  m = beta * pt + (1 - beta) * ps
  jsd = beta * (pt * (lt - np.log(m))).sum(-1) + (1 - beta) * (ps * (ls - np.log(m))).sum(-1)
  per_seq = []
  for b in range(B):
    # logits at t predict token t+1: the response tokens are predicted from positions P-1 .. P+R-2.
    positions = [P - 1 + t for t in range(R) if batch["response_mask"][b, t]]
    if positions:
      per_seq.append(np.mean(jsd[b, positions]))
  return float(np.mean(per_seq))


def make_step(objective, grad_accum=1, lr=1e-2, sft=False):
  student, teacher = tiny(0), tiny(1)
  sg, ss = nnx.split(student)
  tg, ts = nnx.split(teacher)
  params = {"student": ss.to_pure_dict()}
  opt = optax.sgd(lr)
  state = step_lib.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params))
  teacher_kind = teachers.Labels() if sft else teachers.Live(tg)
  fn = jax.jit(functools.partial(step_lib.train_step, student_graph=sg, teacher=teacher_kind,
                                 objective=objective, optimizer=opt, grad_accum_steps=grad_accum))
  return fn, state, ts.to_pure_dict(), student, teacher


def test_gkd_step_loss_matches_numpy_reference(batch):
  fn, state, teacher_params, student, teacher = make_step(Objective(divergences.get("generalized_jsd", beta=0.3)))
  new_state, metrics = fn(state, batch, teacher_params)
  expected = reference_jsd_loss(student, teacher, batch, beta=0.3)
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-4)
  assert int(new_state.step) == 1
  # The student moved; the update is plain SGD on the student only.
  before = jax.tree.leaves(state.params)
  after = jax.tree.leaves(new_state.params)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def assert_same_update(batch, a: dict, b: dict):
  """Two step configurations (make_step kwargs) give the same loss and the same new parameters."""
  fn_a, state, tp, *_ = make_step(**a)
  fn_b, *_ = make_step(**b)
  sa, ma = fn_a(state, batch, tp)
  sb, mb = fn_b(state, batch, tp)
  np.testing.assert_allclose(float(ma["loss"]), float(mb["loss"]), rtol=1e-5)
  for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_gradient_accumulation_matches_one_big_batch(batch):
  # Uneven token counts per micro-batch: only one global denominator makes these agree.
  objective = Objective(divergences.get("forward_kl"), reduction="token")
  assert_same_update(batch, dict(objective=objective, grad_accum=1),
                     dict(objective=objective, grad_accum=2))


def test_chunked_step_matches_plain_step(batch):
  kwargs = dict(divergence=divergences.get("reverse_kl"), temperature=2.0, alpha=0.7)
  assert_same_update(batch, dict(objective=Objective(**kwargs)),
                     dict(objective=Objective(**kwargs, chunk_size=3)))  # 3 does not divide R=7


def test_sft_step_is_masked_cross_entropy(batch):
  fn, state, _, student, _ = make_step(Objective(), sft=True)
  _, metrics = fn(state, batch, None)
  tokens = np.concatenate([batch["prompt_tokens"], batch["response_tokens"]], 1)
  mask = np.concatenate([batch["prompt_mask"], batch["response_mask"]], 1)
  logp = _log_softmax64(helpers.forward(student, jnp.asarray(tokens),
                                        attention_mask=jnp.asarray(mask)))
  per_seq = [np.mean([-logp[b, P - 1 + t, batch["response_tokens"][b, t]]
                      for t in range(R) if batch["response_mask"][b, t]])
             for b in range(B) if batch["response_mask"][b].any()]
  np.testing.assert_allclose(float(metrics["loss"]), np.mean(per_seq), rtol=1e-4)


def test_teacher_gets_no_gradient(batch):
  objective = Objective()
  student, teacher = tiny(0), tiny(1)
  sg, ss = nnx.split(student)
  tg, ts = nnx.split(teacher)
  grads = jax.jit(jax.grad(lambda t: step_lib.loss_terms(
      {"student": ss.to_pure_dict()}, t, batch, 4.0, student_graph=sg, teacher=teachers.Live(tg),
      objective=objective)[0]))(ts.to_pure_dict())
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads))


def test_objective_from_config_binds_divergence_kw():
  c = defaults.default_config()
  c.objective.divergence, c.objective.divergence_kw = "skew_kl", {"alpha": 0.2}
  assert Objective.from_config(c.objective).divergence == divergences.get("skew_kl", alpha=0.2)
  c.objective.divergence = "generalized_jsd"
  c.objective.divergence_kw = {"beta": 0.9, "normalized": True}
  assert dict(Objective.from_config(c.objective).divergence.kw) == {"beta": 0.9, "normalized": True}
