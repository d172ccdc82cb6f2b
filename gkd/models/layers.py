"""The decoder's parts, shared by every family: RMSNorm, attention, the gated MLP and the block.

A family's traits (`families.FAMILIES[config.family]`) switch on its extra norms; per-layer
settings (window, RoPE) come from `LlamaConfig.window` and `LlamaConfig.rope_of`. Masks are
built once per forward by the model (one per distinct window) and handed to each block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from gkd.models import rope
from gkd.models.config import DTYPES, LlamaConfig
from gkd.models.families import FAMILIES

NEG = -1e30  # finite "minus infinity": a fully masked row (a padding query) gives no NaN
ACTIVATIONS = {"silu": jax.nn.silu, "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True)}


class RMSNorm(nnx.Module):
  """RMSNorm computed in float32, returned in the compute dtype.

  Llama-style: the normalized input is cast to the compute dtype, then multiplied by the weight.
  With `plus_one` (Gemma) the weight w is stored around 0 and the float32 product with (1 + w)
  is cast afterwards, as transformers computes each.
  """

  def __init__(self, dim: int, eps: float, *, dtype, param_dtype, plus_one: bool = False):
    init = jnp.zeros if plus_one else jnp.ones
    self.scale = nnx.Param(init((dim,), param_dtype))
    self.eps, self.dtype, self.plus_one = eps, dtype, plus_one

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.plus_one:
      return (x32 * (1.0 + self.scale[...].astype(jnp.float32))).astype(self.dtype)
    return x32.astype(self.dtype) * self.scale[...].astype(self.dtype)


def norm(cfg: LlamaConfig, dim: int | None = None) -> RMSNorm:
  """An RMSNorm over `dim` (default: the model width) in the family's form."""
  return RMSNorm(cfg.dim if dim is None else dim, cfg.norm_eps, dtype=DTYPES[cfg.dtype],
                 param_dtype=DTYPES[cfg.param_dtype], plus_one=FAMILIES[cfg.family].norm_plus_one)


def linear(cfg: LlamaConfig, n_in: int, n_out: int, rngs: nnx.Rngs, bias: bool = False) -> nnx.Linear:
  return nnx.Linear(n_in, n_out, use_bias=bias, dtype=DTYPES[cfg.dtype],
                    param_dtype=DTYPES[cfg.param_dtype],
                    kernel_init=nnx.initializers.normal(cfg.init_std), rngs=rngs)


class Attention(nnx.Module):
  """Grouped-query attention: each of the n_kv_heads serves n_heads // n_kv_heads query heads."""

  def __init__(self, cfg: LlamaConfig, layer: int, *, rngs: nnx.Rngs):
    self.cfg, self.layer, hd = cfg, layer, cfg.hd
    self.q = linear(cfg, cfg.dim, cfg.n_heads * hd, rngs, cfg.qkv_bias)
    self.k = linear(cfg, cfg.dim, cfg.n_kv_heads * hd, rngs, cfg.qkv_bias)
    self.v = linear(cfg, cfg.dim, cfg.n_kv_heads * hd, rngs, cfg.qkv_bias)
    self.o = linear(cfg, cfg.n_heads * hd, cfg.dim, rngs)
    if FAMILIES[cfg.family].qk_norm:
      self.q_norm, self.k_norm = norm(cfg, hd), norm(cfg, hd)

  def _positional(self, x, positions, which: str):
    """Per-head queries or keys [B,T,H,hd]: normalized (Qwen3, Gemma 3), then rotated."""
    if FAMILIES[self.cfg.family].qk_norm:
      x = getattr(self, f"{which}_norm")(x)
    settings = self.cfg.rope_of(self.layer)
    if settings is None:  # a layer without positions (SmolLM3)
      return x
    return rope.rotate(x, positions, rope.inverse_frequencies(self.cfg.hd, **settings))

  def __call__(self, x, positions, mask, kv=None, index=None, start=0):
    """x [B,T,D], queries from position `start` on (all T are keys); mask bool[B,T,S]; kv: an
    optional cache (k, v) [B,Hkv,S,hd] written at `index`. Returns [B,T−start,D] and kv."""
    cfg = self.cfg
    b, t = x.shape[0], x.shape[1] - start
    hd, hkv = cfg.hd, cfg.n_kv_heads
    q = self.q(x[:, start:]).reshape(b, t, cfg.n_heads, hd)
    q = self._positional(q, positions[:, start:], "q")
    # Keys and values are kept head-major, [B,Hkv,S,hd], the layout the attention products
    # read: with [B,S,Hkv,hd] a decode step would copy each layer's whole cache to transpose it.
    k = self._positional(self.k(x).reshape(b, -1, hkv, hd), positions, "k").transpose(0, 2, 1, 3)
    v = self.v(x).reshape(b, -1, hkv, hd).transpose(0, 2, 1, 3)
    if kv is not None:
      k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, 0, index, 0))
      v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, 0, index, 0))
      kv = (k, v)
    q = q.reshape(b, t, hkv, cfg.n_heads // hkv, hd).transpose(0, 2, 3, 1, 4)  # [B,Hkv,G,T,hd]
    scale = (cfg.query_pre_attn_scalar or hd) ** -0.5
    scores = jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None, None, start:], scores * scale, NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksd->bkgtd", probs, v).transpose(0, 3, 1, 2, 4)
    return self.o(out.reshape(b, t, cfg.n_heads * hd)), kv


class MLP(nnx.Module):
  """Gated MLP: down(act(gate(x)) * up(x)), SwiGLU with silu, GeGLU with tanh-approximated gelu."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.gate = linear(cfg, cfg.dim, cfg.ffn_dim, rngs)
    self.up = linear(cfg, cfg.dim, cfg.ffn_dim, rngs)
    self.down = linear(cfg, cfg.ffn_dim, cfg.dim, rngs)
    self.activation = cfg.activation

  def __call__(self, x):
    return self.down(ACTIVATIONS[self.activation](self.gate(x)) * self.up(x))


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); with sandwich norms
  (Gemma 3) each branch's output is normalized again before it is added."""

  def __init__(self, cfg: LlamaConfig, layer: int, *, rngs: nnx.Rngs):
    self.attn_norm = norm(cfg)
    self.attn = Attention(cfg, layer, rngs=rngs)
    self.mlp_norm = norm(cfg)
    self.mlp = MLP(cfg, rngs=rngs)
    self.sandwich = FAMILIES[cfg.family].sandwich_norms
    if self.sandwich:
      self.attn_post_norm, self.mlp_post_norm = norm(cfg), norm(cfg)

  def __call__(self, x, positions, mask, kv=None, index=None, start=0):
    h, kv = self.attn(self.attn_norm(x), positions, mask, kv, index, start)
    x = x[:, start:] + (self.attn_post_norm(h) if self.sandwich else h)
    h = self.mlp(self.mlp_norm(x))
    return x + (self.mlp_post_norm(h) if self.sandwich else h), kv
