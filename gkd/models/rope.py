"""Rotary position embeddings: the frequencies (plain, linear- or Llama-3-scaled) and the rotation.

The rotation uses Hugging Face's "rotate-half" layout: dimension i of a head pairs with
dimension i + head_dim/2. GGUF files store q/k in llama.cpp's interleaved layout; gguf.py
permutes them on load so that one rotation serves every checkpoint.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def inverse_frequencies(head_dim: int, *, theta: float, scaling: str = "default",
                        factor: float = 1.0, low_freq_factor: float = 1.0,
                        high_freq_factor: float = 4.0, original_max_len: int = 8192) -> jax.Array:
  """float32 [head_dim/2]: theta^(-2i/head_dim), then scaled.

  "linear" divides every frequency by `factor` (position interpolation). "llama3" (Llama 3.1+)
  divides only the frequencies whose wavelength exceeds original_max_len / low_freq_factor,
  keeps those shorter than original_max_len / high_freq_factor, and blends linearly (in
  original_max_len / wavelength) in between.
  """
  inv_freq = theta ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  if scaling == "linear":
    return inv_freq / factor
  if scaling == "llama3":
    wavelen = 2 * math.pi / inv_freq
    smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    low = wavelen > original_max_len / low_freq_factor
    high = wavelen < original_max_len / high_freq_factor
    return jnp.where(low, inv_freq / factor, jnp.where(high, inv_freq, blended))
  if scaling != "default":
    raise ValueError(f"Unknown RoPE scaling {scaling!r}.")
  return inv_freq


def rotate(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """x [B,T,H,hd] rotated by angle position × frequency (computed in float32); positions [B,T]."""
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B,T,hd/2]
  cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
