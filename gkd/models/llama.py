"""A Llama-family decoder-only transformer in Flax NNX, with a functional KV cache.

RMSNorm, rotary position embeddings (Hugging Face "rotate-half" layout), SwiGLU MLP,
grouped-query attention, tied or untied embeddings, optional q/k/v biases (Qwen2). One class
covers test sizes up to 1B+ (see `PRESETS`).

Parameter names are stable because the sharding code matches on them:
  embed.embedding [V,D], layers.{i}.attn.{q,k,v,o}.kernel [in,out] (+ .bias for q/k/v),
  layers.{i}.mlp.{gate,up,down}.kernel, layers.{i}.{attn_norm,mlp_norm}.scale,
  final_norm.scale, lm_head.kernel [D,V] (untied only).

The KV cache is a pytree (`KVCache`) passed in and returned by `forward_cached`, never
stored on the module, so jitted samplers can carry it through a `lax.while_loop` and donate it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_NEG = -1e30  # finite "minus infinity": a fully masked row (padding query) gives no NaN


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture plus numerics. `dtype` is the compute dtype, `param_dtype` the storage dtype."""

  vocab_size: int
  dim: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  ffn_dim: int
  max_seq_len: int = 2048
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  dtype: str = "float32"
  param_dtype: str = "float32"
  head_dim: int | None = None  # None: dim // n_heads
  qkv_bias: bool = False  # Qwen2-style biases on q/k/v projections
  init_std: float = 0.02

  def __post_init__(self):
    for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"LlamaConfig.{name} must be positive, got {getattr(self, name)}.")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}.")
    if self.head_dim is None and self.dim % self.n_heads:
      raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}; set head_dim.")
    if self.hd % 2:
      raise ValueError(f"head_dim={self.hd} must be even for RoPE.")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"LlamaConfig.{name}={getattr(self, name)!r}; use one of {sorted(DTYPES)}.")

  @property
  def hd(self) -> int:
    """The per-head dimension."""
    return self.head_dim if self.head_dim is not None else self.dim // self.n_heads

  def replace(self, **changes: Any) -> "LlamaConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "LlamaConfig":
    return cls(**d)


PRESETS: dict[str, LlamaConfig] = {
  # Test size: compiles in a second or two on CPU.
  "tiny": LlamaConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128,
                      max_seq_len=256),
  "smollm2-135m": LlamaConfig(vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3,
                              ffn_dim=1536, max_seq_len=8192, rope_theta=100000.0),
  "smollm2-360m": LlamaConfig(vocab_size=49152, dim=960, n_layers=32, n_heads=15, n_kv_heads=5,
                              ffn_dim=2560, max_seq_len=8192, rope_theta=100000.0),
  "smollm2-1.7b": LlamaConfig(vocab_size=49152, dim=2048, n_layers=24, n_heads=32, n_kv_heads=32,
                              ffn_dim=8192, max_seq_len=8192, rope_theta=130000.0),
}


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


def _rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotate-half RoPE (HF layout: pairs are (i, i + hd/2)). x: [B,T,H,hd], positions: [B,T]."""
  hd = x.shape[-1]
  inv_freq = theta ** (-jnp.arange(0, hd, 2, dtype=jnp.float32) / hd)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,hd/2]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class RMSNorm(nnx.Module):
  """RMSNorm computed in float32 (as HF does), returned in the compute dtype."""

  def __init__(self, dim: int, eps: float, *, dtype, param_dtype):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
    self.eps, self.dtype = eps, dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32.astype(self.dtype) * self.scale[...].astype(self.dtype))


def _linear(cfg: LlamaConfig, n_in: int, n_out: int, rngs: nnx.Rngs, bias: bool = False) -> nnx.Linear:
  return nnx.Linear(n_in, n_out, use_bias=bias, dtype=DTYPES[cfg.dtype],
                    param_dtype=DTYPES[cfg.param_dtype],
                    kernel_init=nnx.initializers.normal(cfg.init_std), rngs=rngs)


class Attention(nnx.Module):
  """Grouped-query attention: each of the n_kv_heads serves n_heads // n_kv_heads query heads."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.cfg, hd = cfg, cfg.hd
    self.q = _linear(cfg, cfg.dim, cfg.n_heads * hd, rngs, cfg.qkv_bias)
    self.k = _linear(cfg, cfg.dim, cfg.n_kv_heads * hd, rngs, cfg.qkv_bias)
    self.v = _linear(cfg, cfg.dim, cfg.n_kv_heads * hd, rngs, cfg.qkv_bias)
    self.o = _linear(cfg, cfg.n_heads * hd, cfg.dim, rngs)

  def __call__(self, x, positions, mask, kv=None, index=None, start=0):
    """x [B,T,D], queries from position `start` on (all T are keys); mask bool[B,T,S]; kv: an
    optional cache (k, v) [B,Hkv,S,hd] written at `index`. Returns [B,T−start,D] and kv."""
    cfg = self.cfg
    b, t = x.shape[0], x.shape[1] - start
    hd, hkv = cfg.hd, cfg.n_kv_heads
    q = _rope(self.q(x[:, start:]).reshape(b, t, cfg.n_heads, hd), positions[:, start:],
              cfg.rope_theta)
    # Keys and values are kept head-major, [B,Hkv,S,hd], the layout the attention products
    # read: with [B,S,Hkv,hd] a decode step copied each layer's whole cache to transpose it.
    k = _rope(self.k(x).reshape(b, -1, hkv, hd), positions, cfg.rope_theta).transpose(0, 2, 1, 3)
    v = self.v(x).reshape(b, -1, hkv, hd).transpose(0, 2, 1, 3)
    if kv is not None:
      k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, 0, index, 0))
      v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, 0, index, 0))
      kv = (k, v)
    q = q.reshape(b, t, hkv, cfg.n_heads // hkv, hd).transpose(0, 2, 3, 1, 4)  # [B,Hkv,G,T,hd]
    scores = jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None, None, start:], scores * hd ** -0.5, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v).transpose(0, 3, 1, 2, 4)
    return self.o(out.reshape(b, t, cfg.n_heads * hd)), kv


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.gate = _linear(cfg, cfg.dim, cfg.ffn_dim, rngs)
    self.up = _linear(cfg, cfg.dim, cfg.ffn_dim, rngs)
    self.down = _linear(cfg, cfg.ffn_dim, cfg.dim, rngs)

  def __call__(self, x):
    return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    dt, pdt = DTYPES[cfg.dtype], DTYPES[cfg.param_dtype]
    self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps, dtype=dt, param_dtype=pdt)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps, dtype=dt, param_dtype=pdt)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x, positions, mask, kv=None, index=None, start=0):
    h, kv = self.attn(self.attn_norm(x), positions, mask, kv, index, start)
    x = x[:, start:] + h
    return x + self.mlp(self.mlp_norm(x)), kv


class Llama(nnx.Module):
  """Decoder-only transformer. `model(tokens)` returns float32 logits [B,T,V]."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    dt, pdt = DTYPES[config.dtype], DTYPES[config.param_dtype]
    self.embed = nnx.Embed(config.vocab_size, config.dim, dtype=dt, param_dtype=pdt,
                           embedding_init=nnx.initializers.normal(config.init_std), rngs=rngs)
    self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.n_layers)])
    self.final_norm = RMSNorm(config.dim, config.norm_eps, dtype=dt, param_dtype=pdt)
    if not config.tie_embeddings:
      self.lm_head = _linear(config, config.dim, config.vocab_size, rngs)

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """[B,T] -> [B,T,D] in the compute dtype; safe under explicit-sharding meshes."""
    table = self.embed.embedding[...]
    sharding = getattr(jax.typeof(tokens), "sharding", None)
    if sharding is not None and getattr(sharding.mesh, "explicit_axes", ()):
      # An explicitly sharded gather needs its output sharding spelled out: batch-sharded.
      out = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*sharding.spec, None))
      x = table.at[tokens].get(out_sharding=out)
    else:
      x = jnp.take(table, tokens, axis=0)
    return x.astype(DTYPES[self.config.dtype])

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
    mask = jnp.tril(jnp.ones((t, t), bool))[None] & attention_mask[:, None, :]  # causal
    x = self.embed_tokens(tokens)
    per_layer = []
    for i, block in enumerate(self.layers):
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
    XLA:CPU streams the table once for it, unlike its small-batch dot (d=256, batch 8: 1.4 vs
    1.9 ms per decode step; sampler call 0.21 -> 0.17 s). One row is fastest as the plain dot."""
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
    causal = slots[None, :] <= index + jnp.arange(t)[:, None]  # [T,S]
    mask = causal[None] & slot_mask[:, None, :]
    x = self.embed_tokens(tokens)
    ks, vs = [], []
    for block, k, v in zip(self.layers, cache.k, cache.v):
      x, (k, v) = block(x, positions, mask, (k, v), index)
      ks.append(k)
      vs.append(v)
    new = KVCache(k=tuple(ks), v=tuple(vs), mask=slot_mask, index=index + t)
    return self.final_norm(x), new


# -- construction helpers ----------------------------------------------------------------------
def init_model(config: LlamaConfig, seed: int) -> Llama:
  """A randomly initialized model (normal(init_std) weights, unit norms)."""
  return Llama(config, rngs=nnx.Rngs(seed))


def count_params(model: nnx.Module) -> int:
  """Number of parameter scalars (tied embeddings counted once)."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _copy_state(dst: nnx.Module, src: nnx.Module) -> None:
  # Real copies: a trainer that donates the student's buffers must not delete the teacher's.
  nnx.update(dst, jax.tree.map(lambda a: jnp.array(a, copy=True), nnx.state(src, nnx.Param)))


def derive_student(teacher: Llama, *, layers: Sequence[int] | None = None,
                   every_k: int | None = None, rngs: nnx.Rngs) -> Llama:
  """A shallower student initialized from the teacher (DistilBERT's recipe).

  Copies the embeddings, final norm, output head and the chosen blocks. Give exactly one of
  `layers` (teacher block indices, in order) or `every_k` (blocks 0, k, 2k, ...). For a
  narrower student, build `init_model(teacher.config.replace(dim=..., ...), seed)` instead:
  widths cannot be copied, so it is randomly initialized.
  """
  n = teacher.config.n_layers
  if (layers is None) == (every_k is None):
    raise ValueError("derive_student: give exactly one of `layers` or `every_k`.")
  if every_k is not None:
    if every_k < 1:
      raise ValueError(f"derive_student: every_k must be >= 1, got {every_k}.")
    layers = list(range(0, n, every_k))
  layers = [int(i) for i in layers]
  if not layers or any(not 0 <= i < n for i in layers):
    raise ValueError(f"derive_student: layers {layers} must be a non-empty subset of [0, {n}).")
  student = Llama(teacher.config.replace(n_layers=len(layers)), rngs=rngs)
  _copy_state(student.embed, teacher.embed)
  _copy_state(student.final_norm, teacher.final_norm)
  if not teacher.config.tie_embeddings:
    _copy_state(student.lm_head, teacher.lm_head)
  for dst, src in zip(student.layers, layers):
    _copy_state(dst, teacher.layers[src])
  return student


# -- flat name <-> array views, used by the checkpoint loaders and writers --------------------
def flat_params(model: Llama) -> dict[str, jax.Array]:
  """{"layers.0.attn.q.kernel": array, ...} for every parameter."""
  return {".".join(map(str, path)): var[...]
          for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def from_flat_params(config: LlamaConfig, params: dict[str, Any]) -> Llama:
  """Builds a model from a complete {name: array} dict without random-initializing it first;
  raises ValueError naming any missing, unexpected or mis-shaped parameter."""
  abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  flat = dict(nnx.to_flat_state(state))
  want = {".".join(map(str, k)): k for k in flat}
  missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
  if missing or extra:
    raise ValueError(f"Checkpoint does not match the architecture: missing {missing[:5]}"
                     f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}.")
  pdt = DTYPES[config.param_dtype]
  for name, key in want.items():
    value = params[name]
    if tuple(value.shape) != tuple(flat[key].shape):
      raise ValueError(f"Parameter {name} has shape {tuple(value.shape)}, the config implies "
                       f"{tuple(flat[key].shape)}.")
    flat[key] = flat[key].replace(jnp.asarray(value, pdt))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
