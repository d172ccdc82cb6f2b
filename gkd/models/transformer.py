"""The decoder (`Llama`, named after the first family it ran) and its functional KV cache.

`model(tokens)` gives float32 logits [B,T,V]; `hidden_states` gives the final states (and each
block's output) for the heads that training computes in chunks; `forward_cached` appends tokens
to a `KVCache` for sampling, and `next_token_logits` is the decoding head. The cache is a pytree
passed in and returned, never stored on the module, so jitted samplers can carry it through a
`lax.while_loop` and donate it.

Attention masks are built here, once per forward and per distinct window, from slot indices:
all rows of a batch write the same cache slot, and a row's real tokens are contiguous (left-
padded prompt, then its continuation), so slot distance is position distance and a sliding
window is `query slot − key slot < window`, as transformers counts it. Sliding layers keep a
full-length cache; the window only masks it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gkd.models.config import DTYPES, LlamaConfig
from gkd.models.families import FAMILIES
from gkd.models.layers import Block, linear, norm


class KVCache(NamedTuple):
  """Per-layer keys/values [B,Hkv,S,hd], which slots hold real tokens, and the next slot.

  All rows write at the same slot (`index`): left-padded prompts fill slots [0, P) with
  padding marked False in `mask`, and each decode step appends one slot.
  """

  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  mask: jax.Array  # bool[B,S]
  index: jax.Array  # int32 scalar


def default_positions(attention_mask: jax.Array) -> jax.Array:
  """RoPE positions counted from each row's first real token (0 on left padding)."""
  return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def batch_full(like, shape, value, dtype) -> jax.Array:
  """jnp.full(shape, value, dtype), sharded along the batch axis like `like` (if given): under
  explicit-sharding meshes a replicated buffer cannot receive sharded updates, so buffers are
  broadcast from a slice of a batch-sharded array instead of built from scratch."""
  if like is None:
    return jnp.full(shape, value, dtype)
  base = jnp.full_like(like.reshape(like.shape[0], -1)[:, :1], value, dtype=dtype)
  return jnp.broadcast_to(base.reshape((shape[0],) + (1,) * (len(shape) - 1)), shape)


def layer_masks(config: LlamaConfig, causal: jax.Array, query_slots, key_slots,
                keys: jax.Array) -> list[jax.Array]:
  """Each layer's bool mask [B,T,S]: `causal` [T,S] (and, for a sliding layer, the window over
  query_slots [T] and key_slots [S]) with the real `keys` [B,S]."""
  full = causal[None] & keys[:, None, :]
  masks = {}
  for window in {config.window(i) for i in range(config.n_layers)} - {None}:
    band = key_slots[None, :] > query_slots[:, None] - window
    masks[window] = (causal & band)[None] & keys[:, None, :]
  return [masks.get(config.window(i), full) for i in range(config.n_layers)]


class Llama(nnx.Module):
  """Decoder-only transformer of any family in `families.FAMILIES`; float32 logits [B,T,V]."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    dt, pdt = DTYPES[config.dtype], DTYPES[config.param_dtype]
    self.embed = nnx.Embed(config.vocab_size, config.dim, dtype=dt, param_dtype=pdt,
                           embedding_init=nnx.initializers.normal(config.init_std), rngs=rngs)
    self.layers = nnx.List([Block(config, i, rngs=rngs) for i in range(config.n_layers)])
    self.final_norm = norm(config)
    if not config.tie_embeddings:
      self.lm_head = linear(config, config.dim, config.vocab_size, rngs)

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """[B,T] -> [B,T,D] in the compute dtype (times sqrt(D) for Gemma); safe under
    explicit-sharding meshes."""
    table = self.embed.embedding[...]
    sharding = getattr(jax.typeof(tokens), "sharding", None)
    if sharding is not None and getattr(sharding.mesh, "explicit_axes", ()):
      # An explicitly sharded gather needs its output sharding spelled out: batch-sharded.
      out = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec, None))
      x = table.at[tokens].get(out_sharding=out)
    else:
      x = jnp.take(table, tokens, axis=0)
    dt = DTYPES[self.config.dtype]
    if FAMILIES[self.config.family].scale_embeddings:  # the factor rounded to the compute dtype
      return x.astype(dt) * jnp.asarray(self.config.dim ** 0.5, dt)
    return x.astype(dt)

  # -- full-sequence forward (training, scoring) ---------------------------------------------
  def hidden_states(self, tokens, *, positions=None, attention_mask=None, keep_from=0):
    """(final hidden after the final norm, each block's output), all [B,T−keep_from,D]: positions
    before `keep_from` are context only, and the last block skips them (a scorer's prompt).

    attention_mask: bool[B,T], True on real tokens. Attention is causal and never looks at
    padding keys; positions default to `default_positions(attention_mask)`.
    """
    b, t = tokens.shape
    if not 0 <= keep_from < t:
      raise ValueError(f"keep_from={keep_from} must be in [0, {t}) for {t} positions.")
    if attention_mask is None:
      attention_mask = batch_full(tokens, (b, t), True, bool)
    attention_mask = attention_mask.astype(bool)
    if positions is None:
      positions = default_positions(attention_mask)
    slots = jnp.arange(t)
    masks = layer_masks(self.config, jnp.tril(jnp.ones((t, t), bool)), slots, slots, attention_mask)
    x = self.embed_tokens(tokens)
    per_layer = []
    for i, (block, mask) in enumerate(zip(self.layers, masks)):
      x, _ = block(x, positions, mask, start=keep_from if i == len(self.layers) - 1 else 0)
      per_layer.append(x[:, x.shape[1] - (t - keep_from):])
    return self.final_norm(x), tuple(per_layer)

  def __call__(self, tokens, *, positions=None, attention_mask=None):
    final, _ = self.hidden_states(tokens, positions=positions, attention_mask=attention_mask)
    return self.logits(final)

  def unembed_kernel(self) -> jax.Array:
    """[D,V]: the output projection (`embed.embedding.T` when tied), in the compute dtype.

    Cast here so every head (plain, chunked, sampling) runs in the compute dtype even when the
    weights are stored in float32 (mixed precision); the head accumulates in float32.
    """
    kernel = self.embed.embedding[...].T if self.config.tie_embeddings else self.lm_head.kernel[...]
    return kernel.astype(DTYPES[self.config.dtype])

  def logits(self, hidden: jax.Array) -> jax.Array:
    """float32 logits from final hidden states [..., D] (accumulated in float32 for bf16)."""
    dt = DTYPES[self.config.dtype]
    return jnp.dot(hidden.astype(dt), self.unembed_kernel().astype(dt),
                   preferred_element_type=jnp.float32)

  def next_token_logits(self, hidden: jax.Array) -> jax.Array:
    """The decoding head: `logits` of hidden [B,D], one position per row, as float32 [B,V].

    Several rows are a fused multiply-and-sum over D, vocabulary-major [V,B] behind a barrier:
    XLA:CPU streams the table once for it, where its small-batch dot reads the table once per
    row (experiments/README.md has the measured decode step). One row is fastest as the plain dot.
    """
    if hidden.shape[0] == 1:
      return self.logits(hidden)
    table = self.unembed_kernel().T  # [V,D]: a tied embedding's own layout (the transposes cancel)
    rows = hidden.astype(jnp.float32)[None]  # [1,B,D]; the product is fused, never written
    return jax.lax.optimization_barrier(jnp.sum(table[:, None].astype(jnp.float32) * rows, -1)).T

  # -- KV-cache decoding ---------------------------------------------------------------------
  def init_cache(self, batch_size: int, max_len: int, dtype=None, *, like=None) -> KVCache:
    """An empty cache of `max_len` slots (prompt plus new tokens), in the compute dtype.

    `like`: an optional [B, ...] array (e.g. the prompt) whose batch sharding the cache copies,
    so that it works under a mesh with explicit sharding.
    """
    cfg = self.config
    dtype = DTYPES[cfg.dtype] if dtype is None else dtype
    shape = (batch_size, cfg.n_kv_heads, max_len, cfg.hd)
    kv = lambda: tuple(batch_full(like, shape, 0, dtype) for _ in range(cfg.n_layers))  # noqa: E731
    return KVCache(k=kv(), v=kv(), mask=batch_full(like, (batch_size, max_len), False, bool),
                   index=jnp.zeros((), jnp.int32))

  def forward_cached(self, tokens, cache: KVCache, *, positions, attention_mask=None):
    """Appends `tokens` [B,T] at slots [index, index+T) and returns (final hidden [B,T,D], cache).

    Used for the prefill (T = prompt length) and for each decode step (T = 1). Apply
    `self.logits` to the positions you need: the head is the costliest matmul at small sizes.
    """
    b, t = tokens.shape
    if attention_mask is None:
      attention_mask = batch_full(tokens, (b, t), True, bool)
    index = cache.index
    slot_mask = jax.lax.dynamic_update_slice(cache.mask, attention_mask.astype(bool), (0, index))
    slots = jnp.arange(slot_mask.shape[1])
    query_slots = index + jnp.arange(t)
    causal = slots[None, :] <= query_slots[:, None]  # [T,S]
    masks = layer_masks(self.config, causal, query_slots, slots, slot_mask)
    x = self.embed_tokens(tokens)
    ks, vs = [], []
    for block, mask, k, v in zip(self.layers, masks, cache.k, cache.v):
      x, (k, v) = block(x, positions, mask, (k, v), index)
      ks.append(k)
      vs.append(v)
    new = KVCache(k=tuple(ks), v=tuple(vs), mask=slot_mask, index=index + t)
    return self.final_norm(x), new
