"""Tests for gkd.models.llama on tiny random models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd.models import llama
from tests import helpers

TINY = llama.PRESETS["tiny"]


@pytest.fixture(scope="module")
def model():
  return llama.init_model(TINY, seed=0)


def _tokens(b, t, seed=1, vocab=TINY.vocab_size):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, vocab, dtype=jnp.int32)


def test_shapes_dtype_and_head(model):
  tokens = _tokens(2, 7)
  logits = helpers.forward(model, tokens)
  assert logits.shape == (2, 7, TINY.vocab_size) and logits.dtype == jnp.float32
  final, per_layer = model.hidden_states(tokens)
  assert final.shape == (2, 7, TINY.dim) and len(per_layer) == TINY.n_layers
  np.testing.assert_allclose(logits, final @ model.unembed_kernel(), rtol=1e-5, atol=1e-5)


def test_keep_from_gives_the_same_states_and_skips_the_context_in_the_last_block(model):
  """Positions before keep_from are context only: the kept states equal the full forward's (left
  padding included), and the last block does less work for them."""
  tokens = _tokens(2, 9)
  mask = jnp.ones((2, 9), bool).at[1, :3].set(False)
  full_final, full_layers = model.hidden_states(tokens, attention_mask=mask)
  final, layers = model.hidden_states(tokens, attention_mask=mask, keep_from=4)
  np.testing.assert_allclose(final, full_final[:, 4:], rtol=1e-5, atol=1e-5)
  assert len(layers) == TINY.n_layers
  for got, want in zip(layers, full_layers):
    np.testing.assert_allclose(got, want[:, 4:], rtol=1e-5, atol=1e-5)
  graph, state = nnx.split(model)
  flops = lambda k: jax.jit(lambda s: nnx.merge(graph, s).hidden_states(  # noqa: E731
      tokens, attention_mask=mask, keep_from=k)).lower(state).cost_analysis()["flops"]
  skipped_mlp = 2 * 4 * 3 * 2 * TINY.dim * TINY.ffn_dim  # 2 rows x 4 positions, 3 products
  assert flops(0) - flops(4) >= skipped_mlp, (flops(0), flops(4))
  for bad in (-1, 9):
    with pytest.raises(ValueError, match=f"keep_from={bad} must be in"):
      model.hidden_states(tokens, keep_from=bad)


def test_causal(model):
  tokens = _tokens(1, 8)
  changed = tokens.at[0, 5].set((tokens[0, 5] + 1) % TINY.vocab_size)
  a, b = helpers.forward(model, tokens), helpers.forward(model, changed)
  np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
  assert not np.allclose(a[:, 5:], b[:, 5:])


def test_rope_is_relative(model):
  # Shifting every position by a constant leaves attention (and logits) unchanged.
  tokens = _tokens(1, 6)
  pos = jnp.arange(6)[None]
  np.testing.assert_allclose(helpers.forward(model, tokens, positions=pos),
                             helpers.forward(model, tokens, positions=pos + 37),
                             rtol=1e-4, atol=1e-4)


def test_left_padding_matches_unpadded_row(model):
  short = _tokens(1, 4, seed=2)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), short], axis=1)
  mask = jnp.array([[False] * 3 + [True] * 4])
  out = helpers.forward(model, padded, attention_mask=mask)
  assert np.isfinite(np.asarray(out)).all()  # padding positions too
  np.testing.assert_allclose(out[:, 3:], helpers.forward(model, short), rtol=1e-5, atol=1e-5)
  # A fully padded row must not produce NaN either.
  blank = helpers.forward(model, padded, attention_mask=jnp.zeros_like(mask))
  assert np.isfinite(np.asarray(blank)).all()


def test_kv_cache_matches_full_forward(model):
  # Two left-padded prompts of different lengths, then 5 decode steps.
  p, n = 6, 5
  prompt = _tokens(2, p, seed=3)
  mask = jnp.array([[True] * p, [False] * 2 + [True] * (p - 2)])
  new = _tokens(2, n, seed=4)
  full_tokens = jnp.concatenate([prompt, new], axis=1)
  full_mask = jnp.concatenate([mask, jnp.ones((2, n), bool)], axis=1)
  full = helpers.forward(model, full_tokens, attention_mask=full_mask)

  @nnx.jit
  def step(model, tokens, cache, **kw):  # compiled, as the sampler's decode steps are
    h, cache = model.forward_cached(tokens, cache, **kw)
    return model.logits(h), cache

  cache = model.init_cache(2, p + n)
  pos = llama.default_positions(mask)
  logits, cache = step(model, prompt, cache, positions=pos, attention_mask=mask)
  np.testing.assert_allclose(logits[:, -1], full[:, p - 1], rtol=1e-4, atol=1e-4)
  nxt = pos[:, -1] + 1
  for i in range(n):
    logits, cache = step(model, new[:, i:i + 1], cache, positions=(nxt + i)[:, None])
    np.testing.assert_allclose(logits[:, 0], full[:, p + i], rtol=1e-4, atol=1e-4)
  assert int(cache.index) == p + n


@pytest.mark.parametrize("tied", [True, False])
def test_next_token_logits_are_the_heads_logits(tied):
  """The decoding head sums products over D for several rows: the same values, and the [V,B,D]
  products stay inside one fusion instead of being written out."""
  m = llama.init_model(TINY.replace(tie_embeddings=tied), seed=1)
  hidden = jax.random.normal(jax.random.key(2), (3, TINY.dim))
  want = np.asarray(hidden, np.float64) @ np.asarray(m.unembed_kernel(), np.float64)
  head = jax.jit(lambda h: m.next_token_logits(h))
  for rows in (hidden, hidden[:1]):
    got = head(rows)
    assert got.shape == (rows.shape[0], TINY.vocab_size) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want[:rows.shape[0]], rtol=1e-5, atol=1e-5)
  scratch = head.lower(hidden).compile().memory_analysis().temp_size_in_bytes
  assert scratch < hidden.size * TINY.vocab_size * 4, scratch


def test_split_merge_under_jit(model):
  graphdef, state = nnx.split(model)

  @jax.jit
  def f(state, tokens):
    return nnx.merge(graphdef, state)(tokens)

  tokens = _tokens(2, 5)
  np.testing.assert_allclose(f(state, tokens), helpers.forward(model, tokens), rtol=1e-5, atol=1e-5)
  names = {".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  for name in ("embed.embedding", "layers.0.attn.q.kernel", "layers.1.mlp.down.kernel",
               "layers.0.attn_norm.scale", "final_norm.scale"):
    assert name in names, sorted(names)


def test_untied_bf16_and_count():
  cfg = TINY.replace(tie_embeddings=False, dtype="bfloat16", param_dtype="bfloat16")
  m = llama.init_model(cfg, seed=0)
  assert m.embed.embedding[...].dtype == jnp.bfloat16
  logits = helpers.forward(m, _tokens(1, 4))
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()
  d, f, v, hd = cfg.dim, cfg.ffn_dim, cfg.vocab_size, cfg.hd
  per_layer = d * hd * (cfg.n_heads * 2 + cfg.n_kv_heads * 2) + 3 * d * f + 2 * d
  assert llama.count_params(m) == cfg.n_layers * per_layer + 2 * v * d + d
  assert llama.count_params(llama.init_model(TINY, 0)) == TINY.n_layers * per_layer + v * d + d


def test_derive_student(model):
  full = llama.derive_student(model, layers=range(TINY.n_layers), rngs=nnx.Rngs(5))
  tokens = _tokens(2, 5)
  np.testing.assert_allclose(helpers.forward(full, tokens), helpers.forward(model, tokens),
                             rtol=1e-6, atol=1e-6)
  four = llama.init_model(TINY.replace(n_layers=4), seed=1)
  s = llama.derive_student(four, every_k=2, rngs=nnx.Rngs(5))
  assert s.config.n_layers == 2
  np.testing.assert_array_equal(s.layers[1].mlp.up.kernel[...], four.layers[2].mlp.up.kernel[...])
  np.testing.assert_array_equal(s.embed.embedding[...], four.embed.embedding[...])
  # Copies, not aliases: donating the student must not delete the teacher's buffers.
  assert s.embed.embedding[...].unsafe_buffer_pointer() != four.embed.embedding[...].unsafe_buffer_pointer()
  with pytest.raises(ValueError, match="exactly one"):
    llama.derive_student(four, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="subset"):
    llama.derive_student(four, layers=[0, 4], rngs=nnx.Rngs(0))


def test_config_validation():
  with pytest.raises(ValueError, match="n_kv_heads"):
    TINY.replace(n_kv_heads=3)
  with pytest.raises(ValueError, match="dtype"):
    TINY.replace(dtype="float64")
  assert llama.LlamaConfig.from_dict(TINY.to_dict()) == TINY
  for bad, message in [({"family": "gpt2"}, "family='gpt2'"), ({"activation": "relu"}, "activation"),
                       ({"layer_types": ("full",)}, "layer_types"),
                       ({"layer_types": ("full", "sliding")}, "sliding_window > 0"),
                       ({"nope_layers": (2,)}, "nope_layers"), ({"rope_scaling": "yarn"}, "rope_scaling")]:
    with pytest.raises(ValueError, match=message):
      TINY.replace(**bad)
  # Lists (from ml_collections or JSON) become tuples: the config stays hashable.
  cfg = TINY.replace(layer_types=["sliding", "full"], sliding_window=3, nope_layers=[1])
  assert hash(cfg) and cfg.layer_types == ("sliding", "full") and cfg.window(0) == 3
  assert cfg.rope_of(1) is None and cfg.select_layers([1, 0]).layer_types == ("full", "sliding")
  assert cfg.select_layers([1, 0]).nope_layers == (0,)


def test_a_sliding_window_sees_only_its_last_positions():
  """Token t of a window-3 model depends on tokens t-2..t only; a full-attention one on all."""
  sliding = llama.init_model(TINY.replace(layer_types=("sliding", "sliding"), sliding_window=3), 0)
  tokens = _tokens(1, 8)
  changed = tokens.at[0, 2].set((tokens[0, 2] + 1) % TINY.vocab_size)
  delta = np.abs(np.asarray(sliding(tokens) - sliding(changed)))[0].max(-1)
  # Two layers of window 3 reach 4 positions back: 2..6 change, 7 does not.
  assert (delta[2:7] > 1e-4).all() and delta[7] < 1e-6 and delta[:2].max() < 1e-6
