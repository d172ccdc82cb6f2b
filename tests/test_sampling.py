"""Tests for gkd.sampling on tiny random models."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd import sampling, scoring, teachers
from gkd.models import llama
from tests import helpers
from tests.helpers import count_traces

TINY = llama.PRESETS["tiny"]


@pytest.fixture(scope="module")
def model():
  return llama.init_model(TINY.replace(init_std=0.2), seed=0)  # peaked enough to be non-trivial




ROWS = [[5, 17, 33], [9, 8, 7, 6, 5, 4, 3, 2], [100, 101, 102, 103, 104]]
NO_EOS = TINY.vocab_size - 1  # an id the tests treat as EOS only where they mean to


def test_logprobs_match_full_forward(model):
  """KV-cache decode == full forward, token for token, with mixed-length left-padded prompts."""
  prompt, pmask = helpers.left_pad(ROWS, 8)
  out = sampling.sample(model, prompt, pmask, rng=jax.random.key(0), max_new_tokens=6,
                        eos_id=NO_EOS)
  assert out.mask.all()
  full = jnp.concatenate([prompt, out.tokens], axis=1)
  fmask = jnp.concatenate([pmask, out.mask], axis=1)
  logp = jax.nn.log_softmax(helpers.forward(model, full, attention_mask=fmask), axis=-1)[:, 7:-1]
  want = jnp.take_along_axis(logp, out.tokens[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(out.logprobs, want, rtol=1e-4, atol=1e-4)
  # The cache-free baseline picks the same tokens with the same key.
  nocache = sampling.sample(model, prompt, pmask, rng=jax.random.key(0), max_new_tokens=6,
                            eos_id=NO_EOS, use_cache=False)
  np.testing.assert_array_equal(nocache.tokens, out.tokens)
  np.testing.assert_allclose(nocache.logprobs, out.logprobs, rtol=1e-4, atol=1e-4)


def test_greedy_deterministic_topk1_and_rows_alone(model):
  prompt, pmask = helpers.left_pad(ROWS, 8)
  kw = dict(max_new_tokens=5, eos_id=NO_EOS)
  g1 = sampling.sample(model, prompt, pmask, rng=jax.random.key(1), temperature=0.0, **kw)
  g2 = sampling.sample(model, prompt, pmask, rng=jax.random.key(2), temperature=0.0, **kw)
  np.testing.assert_array_equal(g1.tokens, g2.tokens)
  k1 = sampling.sample(model, prompt, pmask, rng=jax.random.key(3), top_k=1, **kw)
  np.testing.assert_array_equal(k1.tokens, g1.tokens)
  np.testing.assert_allclose(k1.logprobs, 0.0, atol=1e-6)  # a point mass after top-k=1
  assert (g1.logprobs < 0).all()  # greedy reports the T=1 log-prob
  for i, row in enumerate(ROWS):  # each row alone, unpadded, continues the same way
    alone = sampling.sample(model, jnp.asarray([row], jnp.int32), jnp.ones((1, len(row)), bool),
                            rng=jax.random.key(4), temperature=0.0, **kw)
    np.testing.assert_array_equal(alone.tokens[0], g1.tokens[i])


def test_eos_mask_and_pad(model):
  prompt, pmask = helpers.left_pad(ROWS, 8)
  g = sampling.sample(model, prompt, pmask, rng=jax.random.key(0), temperature=0.0,
                      max_new_tokens=6, eos_id=NO_EOS)
  eos = int(g.tokens[0, 2])  # make row 0 stop at step 2 (or earlier if it repeats)
  out = sampling.sample(model, prompt, pmask, rng=jax.random.key(0), temperature=0.0,
                        max_new_tokens=6, eos_id=eos, pad_id=NO_EOS)
  for r in range(len(ROWS)):
    toks = np.asarray(out.tokens[r])
    hits = np.where(toks == eos)[0]
    stop = hits[0] if len(hits) else 5
    np.testing.assert_array_equal(out.mask[r], np.arange(6) <= stop)
    assert (toks[stop + 1:] == NO_EOS).all() and (np.asarray(out.logprobs[r])[stop + 1:] == 0).all()
  assert not out.mask[0, 3:].any()
  # All rows ending at once: everything after step 0 is masked out.
  first = int(g.tokens[1, 0])
  one = sampling.sample(model, prompt[1:2], pmask[1:2], rng=jax.random.key(0), temperature=0.0,
                        max_new_tokens=6, eos_id=first)
  np.testing.assert_array_equal(one.mask[0], [True] + [False] * 5)


def test_no_retrace(model):
  prompt, pmask = helpers.left_pad(ROWS, 8)
  graphdef, params = nnx.split(model)
  sampler = sampling.Sampler(graphdef, eos_id=NO_EOS, top_p=0.9)
  kw = dict(max_new_tokens=4, temperature=0.7)
  assert count_traces(lambda: sampler(params, prompt, pmask, rng=jax.random.key(0), **kw)) > 0

  new_params = jax.tree.map(lambda x: x * 1.5, params)  # new parameter values: same program
  other_prompt, keys = prompt + 1, (jax.random.key(9), jax.random.key(5))

  def again():
    sampler(params, other_prompt, pmask, rng=keys[0], **kw)
    sampler(new_params, prompt, pmask, rng=keys[1], **kw)
  assert count_traces(again) == 0


def test_decode_loop_updates_the_cache_in_place(model):
  """Each decode step writes one slot of every layer's keys and values. When the cache's layout
  differed from the one the attention products read, XLA transposed and copied every layer's
  whole cache in every step (17 ms of a 0.25 s sampler call of the benchmark's student)."""
  b, p, n = 3, 5, 7
  graphdef, params = nnx.split(model)
  settings = sampling.SamplerSettings(n, eos_id=NO_EOS, pad_id=0)
  hlo = sampling._sample_jit.lower(graphdef, settings, params, jnp.zeros((b, p), jnp.int32),
                                   jnp.ones((b, p), bool), jax.random.key(0)).compile().as_text()
  dims = sorted((b, p + n, TINY.n_kv_heads, TINY.hd))
  transposed = [line for line in hlo.splitlines()
                if "while/body" in line and ("transpose(" in line or "transpose_copy" in line)
                and any(sorted(map(int, shape.split(","))) == dims
                        for shape in re.findall(r"f32\[([0-9,]+)\]", line.split("=")[1][:40]))]
  assert not transposed, transposed[:2]


def test_logprobs_only_on_request(model):
  prompt, pmask = helpers.left_pad(ROWS, 8)
  graphdef, params = nnx.split(model)
  out = sampling.Sampler(graphdef, eos_id=NO_EOS)(params, prompt, pmask, rng=jax.random.key(0),
                                                  max_new_tokens=3)
  assert out.logprobs is None
  full = sampling.Sampler(graphdef, eos_id=NO_EOS, return_logprobs=True)(
      params, prompt, pmask, rng=jax.random.key(0), max_new_tokens=3)
  np.testing.assert_array_equal(out.tokens, full.tokens)  # the flag changes nothing else
  np.testing.assert_array_equal(out.mask, full.mask)


def _first_token_samples(model, settings, n, seed=0):
  prompt = jnp.tile(jnp.asarray([[3, 1, 4, 1, 5]], jnp.int32), (n, 1))
  out = sampling.sample(model, prompt, jnp.ones_like(prompt, bool), rng=jax.random.key(seed),
                        max_new_tokens=1, eos_id=NO_EOS, **settings)
  probs = jax.nn.softmax(helpers.forward(model, prompt[:1])[0, -1])
  return np.asarray(out.tokens[:, 0]), np.asarray(probs), out


def _chi2(tokens, probs):
  counts = np.bincount(tokens, minlength=len(probs))
  expected = probs * len(tokens)
  big = expected >= 5  # pool the rare tail into one bin
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  keep = exp > 0
  return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum()) - 1


def test_t1_samples_match_softmax():
  m = llama.init_model(TINY.replace(vocab_size=16, init_std=0.1), seed=3)
  tokens, probs, out = _first_token_samples(m, {}, 4000)
  stat, dof = _chi2(tokens, probs)
  assert stat < dof + 5 * np.sqrt(2 * dof), (stat, dof)  # ~5 sigma
  np.testing.assert_allclose(out.logprobs[:, 0], np.log(probs[tokens]), rtol=1e-4, atol=1e-4)


@functools.partial(jax.jit, static_argnums=(1, 3))
def _choose_tiled(logits, n, key, settings):
  return sampling.choose(jnp.tile(logits[None], (n, 1)), key, settings)


def _choose_samples(logits, n, seed, **settings):
  s = sampling.SamplerSettings(max_new_tokens=1, return_logprobs=True, **settings)
  tok, lp = _choose_tiled(jnp.asarray(logits), n, jax.random.key(seed), s)
  return np.asarray(tok), np.asarray(lp)


def test_choose_temperature_topk_topp():
  logits = jnp.log(jnp.asarray([0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.03, 0.02]))
  probs = np.asarray(jax.nn.softmax(logits))
  # T=0.5 sharpens the distribution to softmax(logits / 0.5) ∝ p**2.
  tokens, lp = _choose_samples(logits, 4000, 0, temperature=0.5)
  sharp = probs ** 2 / (probs ** 2).sum()
  stat, dof = _chi2(tokens, sharp)
  assert stat < dof + 5 * np.sqrt(2 * dof), (stat, dof)
  assert _chi2(tokens, probs)[0] > dof + 5 * np.sqrt(2 * dof)  # the test tells the two apart
  np.testing.assert_allclose(lp, np.log(sharp[tokens]), rtol=1e-5)
  # top-k=3: only the 3 likeliest tokens, in renormalized proportions.
  tokens, lp = _choose_samples(logits, 4000, 1, top_k=3)
  renorm = np.zeros_like(probs)
  renorm[:3] = probs[:3] / probs[:3].sum()
  assert set(tokens) <= {0, 1, 2}
  stat, dof = _chi2(tokens, renorm)
  assert stat < dof + 5 * np.sqrt(2 * dof), (stat, dof)
  np.testing.assert_allclose(lp, np.log(renorm[tokens]), rtol=1e-5)
  # top-p=0.6: the nucleus is {0.3, 0.2, 0.15} (mass before the 3rd is 0.5 < 0.6).
  tokens, _ = _choose_samples(logits, 2000, 2, top_p=0.6)
  assert set(tokens) == {0, 1, 2}
  greedy, lp = _choose_samples(logits, 2, 3, temperature=0.0)
  assert (greedy == 0).all() and np.allclose(lp, np.log(0.3))


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_sharded_batch(model, axis_type):
  axis_types = (getattr(jax.sharding.AxisType, axis_type),)
  mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=axis_types)
  b = len(jax.devices())
  prompt, pmask = helpers.left_pad((ROWS * b)[:b], 8)
  want = sampling.sample(model, prompt, pmask, rng=jax.random.key(0), temperature=0.0,
                         max_new_tokens=4, eos_id=NO_EOS)
  sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  got = sampling.sample(model, jax.device_put(prompt, sh), jax.device_put(pmask, sh),
                        rng=jax.random.key(0), temperature=0.0, max_new_tokens=4, eos_id=NO_EOS)
  np.testing.assert_array_equal(got.tokens, want.tokens)


def test_bad_settings(model):
  prompt, pmask = helpers.left_pad(ROWS, 8)
  with pytest.raises(ValueError, match="top_p"):
    sampling.sample(model, prompt, pmask, rng=jax.random.key(0), max_new_tokens=2, eos_id=0,
                    top_p=0.0)
  with pytest.raises(ValueError, match="temperature"):
    sampling.sample(model, prompt, pmask, rng=jax.random.key(0), max_new_tokens=2, eos_id=0,
                    temperature=-1.0)


def test_choose_draws_follow_the_softmax_and_greedy_is_argmax():
  """The two-level inverse CDF against NumPy's softmax, with a vocabulary that is not a whole
  number of CDF blocks, −inf entries, a dominant entry, and all mass on the last entry."""
  v = 300  # 2 blocks of 128 and a padded third
  logits = np.asarray(jax.random.normal(jax.random.key(0), (5, v))) * 2
  logits[1, 5:] = -np.inf  # 5 live entries
  logits[2, 7] = 12.0  # one entry holds ~99.9% of the mass
  logits[3, :] = 1.0  # uniform
  logits[4, :] = -np.inf
  logits[4, v - 1] = 0.0  # everything on the last real entry, right before the padding
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  for row in range(5):
    draws, _ = _choose_samples(jnp.asarray(logits[row]), 20000, row)
    assert ((draws >= 0) & (draws < v)).all()
    assert (probs[row, draws] > 0).all(), f"row {row} drew a zero-probability entry"
    stat, dof = _chi2(draws, probs[row])
    assert stat <= dof + 5 * np.sqrt(2 * dof), (row, stat, dof)
    if row == 4:
      assert (draws == v - 1).all()
  greedy = sampling.choose(jnp.asarray(logits), jax.random.key(0),
                           sampling.SamplerSettings(1, temperature=0.0))[0]
  np.testing.assert_array_equal(greedy, np.argmax(logits, axis=-1))
  assert greedy[2] == 7 and greedy[3] == 0  # ties go to the first index


def test_cdf_search_never_lands_on_an_entry_without_mass():
  """Float rounding can leave u at or past the last cumulative sum; the search then takes the
  last entry with mass, not the zero-mass entries (−inf logits, padding) after it."""
  mass = jnp.asarray([[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 1.0]])
  cum = jnp.cumsum(mass, axis=-1)
  past_the_end = jnp.nextafter(cum[:, -1:], jnp.inf)
  np.testing.assert_array_equal(sampling._first_above(cum, past_the_end, mass), [1, 3])
  for u, want in [([0.0, 0.0], [0, 1]), ([1.0, 2.5], [1, 3])]:
    np.testing.assert_array_equal(sampling._first_above(cum, jnp.asarray(u)[:, None], mass), want)


def _trim_batch():
  prompt, pmask = helpers.left_pad(ROWS, 8)
  lengths = np.array([3, 5, 1])
  tokens = np.asarray(jax.random.randint(jax.random.key(0), (3, 20), 0, TINY.vocab_size))
  mask = np.arange(20)[None, :] < lengths[:, None]
  tokens = np.where(mask, tokens, 0).astype(np.int32)
  return {"prompt_tokens": prompt, "prompt_mask": pmask, "response_tokens": jnp.asarray(tokens),
          "response_mask": jnp.asarray(mask), "ids": np.arange(3)}


def test_trim_to_bucket_widths():
  batch = _trim_batch()
  out = sampling.trim_to_bucket(batch, buckets=(4, 8, 16))
  assert out["response_tokens"].shape == (3, 8) and out["response_mask"].shape == (3, 8)
  assert out["prompt_tokens"] is batch["prompt_tokens"] and out["ids"] is batch["ids"]
  np.testing.assert_array_equal(out["response_mask"], np.asarray(batch["response_mask"])[:, :8])
  assert sampling.trim_to_bucket(batch, buckets=(2, 3))["response_tokens"].shape[1] == 20
  assert sampling.trim_to_bucket(batch, buckets=(5,))["response_tokens"].shape[1] == 5
  empty = dict(batch, response_mask=jnp.zeros((3, 20), bool))
  assert sampling.trim_to_bucket(empty, buckets=(4,))["response_mask"].shape[1] == 4


@pytest.mark.parametrize("chunk", [0, 3])
def test_trim_to_bucket_keeps_loss_and_gradients(chunk):
  """Trimmed padding columns change nothing: same loss and gradients as the full width."""
  import functools

  from gkd.objectives import Objective
  from gkd.train import step as step_lib

  student = llama.init_model(TINY, seed=1)
  teacher = llama.init_model(TINY.replace(init_std=0.1), seed=2)
  sg, ss = nnx.split(student)
  tg, ts = nnx.split(teacher)
  objective = Objective(chunk_size=chunk, alpha=0.7)
  grad = jax.jit(jax.value_and_grad(functools.partial(
      step_lib.loss_terms, student_graph=sg, teacher=teachers.Live(tg), objective=objective),
      has_aux=True))
  batch = _trim_batch()
  full = {k: batch[k] for k in scoring.BATCH_KEYS}
  trimmed = {k: v for k, v in sampling.trim_to_bucket(full, buckets=(8,)).items()}
  assert trimmed["response_tokens"].shape[1] == 8
  params = {"student": ss.to_pure_dict()}
  (l_full, m_full), g_full = grad(params, ts.to_pure_dict(), full, 3.0)
  (l_trim, m_trim), g_trim = grad(params, ts.to_pure_dict(), trimmed, 3.0)
  np.testing.assert_allclose(l_trim, l_full, rtol=1e-5)
  np.testing.assert_allclose(m_trim["hard_ce"], m_full["hard_ce"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_trim), jax.tree.leaves(g_full)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
