"""The sampled-token estimator (gkd.objectives.sampled_token): its mean gradient is the
full-vocabulary reverse KL's (a NumPy closed form, and the full estimator on small random models)
within a Monte-Carlo error computed from the samples, its importance weights, its clip, the
step's wiring and the config's checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd import divergences, sampling, scoring, teachers
from gkd.errors import ConfigError
from gkd.models import llama
from gkd.objectives import Objective, sampled_token
from gkd.sources import replay
from gkd.train import defaults, validate
from gkd.train import step as step_lib
from tests import helpers

R, V = 3, 6  # positions and vocabulary of the closed-form tests


def reverse_kl_grad64(z, t):
  """d/dz Σ_r KL(softmax(z_r) ‖ softmax(t_r)) in float64: p ⊙ (log p − log q − KL), per row."""
  p, q = helpers.softmax64(z), helpers.softmax64(t)
  gap = np.log(p) - np.log(q)
  return p * (gap - (p * gap).sum(-1, keepdims=True))


def per_sample_grads(z, t, tokens, sampler_lp=None, clip=0.0, advantage=None):
  """d loss_n / dz for each sampled row n of tokens [N, R] (reduction 'token', weight 1)."""
  def one(z, x, s_lp):
    student_lp = scoring.label_logprobs(z, x)[None]
    teacher_lp = scoring.label_logprobs(jnp.asarray(t), x)[None]
    if advantage is not None:  # a deliberately wrong estimator (the negative control)
      teacher_lp = advantage(student_lp, teacher_lp)
    mask = jnp.ones((1, R), bool)
    return sampled_token.loss(student_lp, teacher_lp, mask, 1.0, reduction="token",
                              sampler_lp=None if s_lp is None else s_lp[None], clip=clip)[0]
  grad = jax.grad(one)
  if sampler_lp is None:
    return np.asarray(jax.vmap(lambda x: grad(jnp.asarray(z), x, None))(tokens), np.float64)
  return np.asarray(jax.vmap(lambda x, s: grad(jnp.asarray(z), x, s))(tokens, sampler_lp),
                    np.float64)


def z_scores(samples, reference):
  """(mean − reference) / its standard error, per component, from the samples' own spread."""
  mean = samples.mean(0)
  se = samples.std(0, ddof=1) / np.sqrt(len(samples))
  return (mean - reference) / np.maximum(se, 1e-12), se


def draw(logits, n, seed):
  """n independent rows of R tokens, token r drawn from softmax(logits[r]) (NumPy)."""
  rng = np.random.default_rng(seed)
  p = helpers.softmax64(logits)
  return np.stack([rng.choice(V, size=n, p=p[r]) for r in range(R)], axis=1).astype(np.int32)


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(0)
  return (1.5 * rng.normal(size=(R, V))).astype(np.float32), \
         (1.5 * rng.normal(size=(R, V))).astype(np.float32)


def test_mean_gradient_is_the_reverse_kl_gradient(pair):
  z, t = pair
  tokens = draw(z, 20000, seed=1)
  grads = per_sample_grads(z, t, tokens)
  reference = reverse_kl_grad64(z, t)
  z_score, se = z_scores(grads, reference)
  # 18 components: P(any |z| > 4.5) is about 1e-4 under the hypothesis; a bias of a few SE fails.
  assert np.abs(z_score).max() < 4.5, z_score
  variance = grads.var(0, ddof=1)
  print(f"\nsampled-token gradient w.r.t. the logits, {len(tokens)} samples: total variance "
        f"{variance.sum():.4f} per sample (the full estimator's is 0 here), "
        f"|reference| {np.linalg.norm(reference):.4f}, largest SE {se.max():.4f}")
  assert np.linalg.norm(reference) > 20 * se.max()  # the check has the power to see a bias

  # The same check rejects an estimator that drops the student's own log-prob from the
  # advantage (A = log q: the gradient of −CE(p, q), not of the reverse KL).
  wrong = per_sample_grads(z, t, tokens, advantage=lambda s, q: q + jax.lax.stop_gradient(s))
  assert np.abs(z_scores(wrong, reference)[0]).max() > 10


def test_importance_weights_make_another_samplers_tokens_unbiased(pair):
  z, t = pair
  sampler = z + np.random.default_rng(2).normal(size=z.shape).astype(np.float32)
  tokens = draw(sampler, 40000, seed=3)
  sampler_lp = np.log(helpers.softmax64(sampler))[np.arange(R), tokens].astype(np.float32)
  reference = reverse_kl_grad64(z, t)
  weighted = per_sample_grads(z, t, tokens, sampler_lp=sampler_lp)
  assert np.abs(z_scores(weighted, reference)[0]).max() < 4.5
  unweighted = per_sample_grads(z, t, tokens)  # the other sampler's tokens taken as the student's
  assert np.abs(z_scores(unweighted, reference)[0]).max() > 10


def test_clip_caps_each_weight_at_its_value(pair):
  z, t = pair
  x = np.array([[0, 1, 2]], np.int32)
  p, q = helpers.softmax64(z), helpers.softmax64(t)
  sampler_lp = (np.log(p[np.arange(R), x[0]]) - np.log([4.0, 0.5, 2.0]))[None]  # ρ = 4, 0.5, 2
  got = per_sample_grads(z, t, x, sampler_lp=sampler_lp.astype(np.float32), clip=1.5)[0]
  rho = np.minimum([4.0, 0.5, 2.0], 1.5)
  gap = np.log(p[np.arange(R), x[0]]) - np.log(q[np.arange(R), x[0]])
  onehot = np.eye(V)[x[0]]
  np.testing.assert_allclose(got, (rho * gap)[:, None] * (onehot - p), rtol=1e-4, atol=1e-6)
  _, metrics = sampled_token.loss(jnp.log(p[np.arange(R), x[0]])[None], jnp.zeros((1, R)),
                                  jnp.ones((1, R), bool), 1.0, reduction="token",
                                  sampler_lp=jnp.asarray(sampler_lp), clip=1.5)
  np.testing.assert_allclose(metrics["clipped"], 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["importance_weight"], rho.mean(), rtol=1e-5)


def tiny(seed, vocab=12, scale=4.0):
  """A small random model whose logits are spread enough to make the KLs non-trivial."""
  cfg = llama.LlamaConfig(vocab_size=vocab, dim=16, n_layers=1, n_heads=2, n_kv_heads=1,
                          ffn_dim=32, max_seq_len=32)
  model = llama.Llama(cfg, rngs=nnx.Rngs(seed))
  graph, state = nnx.split(model)
  pure = jax.tree.map(lambda x: x * scale if x.ndim == 2 and x.shape[0] == vocab else x,
                      state.to_pure_dict())
  return graph, pure


def _step_loss(estimator):
  divergence = divergences.get("reverse_kl")
  return Objective(divergence=divergence, reduction="sequence", estimator=estimator)


def test_mean_gradient_on_random_models_is_the_full_reverse_kl_gradient():
  """Sampled responses of a random student; per sample, the gradient w.r.t. every student
  parameter of the sampled-token loss and of the full reverse KL on the same sample. Both are
  unbiased for the same thing, so their difference, projected on fixed directions, must average
  to 0 within its own error."""
  (s_graph, s_params), (t_graph, t_params) = tiny(0), tiny(1)
  n, r = 4000, 4
  prompts, prompt_mask = helpers.left_pad([[1, 2, 3], [4, 5]] * (n // 2), 3)
  # No token ends a row (the EOS id is outside the vocabulary): every position is sampled.
  out = sampling.Sampler(s_graph, eos_id=99, pad_id=0)(s_params, prompts, prompt_mask,
                                                       rng=jax.random.key(0), max_new_tokens=r)
  batch = {"prompt_tokens": prompts, "prompt_mask": prompt_mask,
           "response_tokens": out.tokens, "response_mask": out.mask}

  @functools.partial(jax.jit, static_argnums=(0, 1))
  def row_grads(estimator, teacher, params):
    def one(row):
      row = jax.tree.map(lambda x: x[None], row)
      return jax.grad(lambda p: step_lib.loss_terms(
          {"student": p}, t_params, row, 1.0, student_graph=s_graph, teacher=teacher,
          objective=_step_loss(estimator))[0])(params)
    grads = jax.vmap(one)(batch)
    return jnp.concatenate([g.reshape(n, -1) for g in jax.tree.leaves(grads)], axis=1)

  live = teachers.Live(t_graph)
  full = np.asarray(row_grads("full", live, s_params), np.float64)
  sampled = np.asarray(row_grads("sampled_token", live, s_params), np.float64)
  mean_full = full.mean(0)
  # The mean full gradient's direction and 8 random ones: along each, the difference has mean 0
  # under the hypothesis, and its standard error comes from the samples.
  directions = np.concatenate([mean_full[None] / np.linalg.norm(mean_full),
                               np.random.default_rng(0).normal(size=(8, full.shape[1]))])
  diff = (sampled - full) @ directions.T
  z = diff.mean(0) / (diff.std(0, ddof=1) / np.sqrt(n))
  assert np.abs(z).max() < 4.5, z
  along = full @ directions[0]
  assert along.mean() > 10 * diff[:, 0].std(ddof=1) / np.sqrt(n)  # a bias would show
  print(f"\nrandom models, {n} samples of {r} tokens: per-sample gradient variance (trace over "
        f"{full.shape[1]} parameters) sampled-token {sampled.var(0, ddof=1).sum():.4g}, full "
        f"{full.var(0, ddof=1).sum():.4g}; |mean full gradient|^2 {mean_full @ mean_full:.4g}")

  class Inverted(teachers.Live):  # the advantage's sign flipped: a wrong estimator to reject
    def token_logprobs(self, params, batch, student=None):
      own = scoring.label_logprobs(student.logits(), batch["response_tokens"])
      return 2 * jax.lax.stop_gradient(own) - super().token_logprobs(params, batch)

  wrong = (np.asarray(row_grads("sampled_token", Inverted(t_graph), s_params), np.float64)
           - full) @ directions.T
  assert np.abs(wrong.mean(0) / (wrong.std(0, ddof=1) / np.sqrt(n))).max() > 10


def test_importance_weight_is_one_when_the_sampler_is_the_student():
  (s_graph, s_params), (t_graph, t_params) = tiny(0), tiny(1)
  prompts, prompt_mask = helpers.left_pad([[1, 2, 3], [4, 5], [6]], 3)
  out = sampling.Sampler(s_graph, eos_id=0, pad_id=0, return_logprobs=True)(
      s_params, prompts, prompt_mask, rng=jax.random.key(1), max_new_tokens=5)
  batch = {"prompt_tokens": prompts, "prompt_mask": prompt_mask,
           "response_tokens": out.tokens, "response_mask": out.mask}
  student_lp = scoring.token_scores(nnx.merge(s_graph, s_params), batch)
  ratio = np.exp(np.asarray(student_lp) - np.asarray(out.logprobs))[np.asarray(out.mask)]
  np.testing.assert_allclose(ratio, 1.0, atol=1e-4)

  loss = functools.partial(step_lib.loss_terms, {"student": s_params}, t_params, weight=3.0,
                           student_graph=s_graph, teacher=teachers.Live(t_graph),
                           objective=_step_loss("sampled_token"))
  plain, plain_metrics = loss(batch)
  weighted, metrics = loss(dict(batch, sampler_logprobs=out.logprobs))
  np.testing.assert_allclose(weighted, plain, rtol=1e-4)
  np.testing.assert_allclose(metrics["importance_weight"], 1.0, atol=1e-4)
  # The estimate of the KL is the mean of log π_θ − log π_T over the sampled tokens.
  teacher_lp = scoring.token_scores(nnx.merge(t_graph, t_params), batch)
  mask = np.asarray(out.mask)
  per_row = [(np.asarray(student_lp - teacher_lp)[b][mask[b]]).mean() for b in range(3)]
  np.testing.assert_allclose(plain_metrics["divergence"], sum(per_row) / 3.0, rtol=1e-4)


def test_chunked_student_logprobs_equal_the_plain_ones():
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 7, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(5, 11)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 11, (2, 7)), jnp.int32)
  f = lambda h, k, c: jnp.sum(jnp.sin(sampled_token.student_logprobs(h, k, labels, c)))
  np.testing.assert_allclose(sampled_token.student_logprobs(hidden, kernel, labels, 3),
                             sampled_token.student_logprobs(hidden, kernel, labels, 0), rtol=1e-5)
  for a, b in zip(jax.grad(f, (0, 1))(hidden, kernel, 3), jax.grad(f, (0, 1))(hidden, kernel, 0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_replay_keeps_the_samplers_logprobs():
  buffer = replay.ReplayBuffer(4)
  rows = {k: np.zeros((2, 3), np.int32) for k in replay.FIELDS}
  buffer.add(dict(rows, sampler_logprobs=np.full((2, 3), -0.5, np.float32)))
  assert buffer.sample(jax.random.key(0), 2)["sampler_logprobs"].shape == (2, 3)


def _config(**overrides):
  c = helpers.smoke_gkd_config()
  c.objective.update(estimator="sampled_token", divergence="reverse_kl")
  return helpers.apply_overrides(c, overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"mix.student": 0.5, "mix.dataset": 0.5}, "needs mix.student=1"),
    ({"objective.divergence": "forward_kl"}, "set objective.divergence='reverse_kl'"),
    ({"objective.temperature": 2.0}, "objective.temperature=1"),
    ({"teacher_store": "/nowhere"}, "teacher_store"),
    ({"objective.cross_tokenizer": "uld", "objective.alpha": 0.5, "teacher.source": "gguf"},
     "cross-tokenizer teacher cannot"),
    ({"objective.estimator": "sampled"}, "estimator must be one of"),
    ({"objective.sampled_token_clip": -1.0}, "sampled_token_clip must be >= 0"),
])
def test_config_errors_name_the_field(overrides, message):
  with pytest.raises(ConfigError, match=message):
    validate.validate(_config(**overrides))


def test_default_config_validates_with_the_estimator():
  validate.validate(_config())
  assert defaults.default_config().objective.estimator == "full"
