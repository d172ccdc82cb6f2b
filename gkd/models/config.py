"""`LlamaConfig`: the sizes and settings of one decoder, for every family gkd runs.

The family (`families.FAMILIES`) fixes the architecture's traits; this config holds what varies
per checkpoint: sizes, numerics, the RoPE base and scaling, the MLP's activation, and the
per-layer settings (which layers attend through a sliding window, which have no RoPE). It is a
frozen, hashable dataclass of plain values, so a model's graph definition can carry it as
static data and ml_collections configs can set any field by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp

from gkd.errors import ModelConfigError
from gkd.models.families import FAMILIES

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ACTIVATIONS = ("silu", "gelu_tanh")  # the gate of a SwiGLU or (tanh-approximated) GeGLU MLP
ROPE_SCALINGS = ("default", "linear", "llama3")
LAYER_TYPES = ("full", "sliding")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture plus numerics. `dtype` is the compute dtype, `param_dtype` the storage dtype.

  RoPE: `rope_theta` is the base; `rope_scaling` "linear" divides every frequency by
  `rope_factor`, "llama3" divides the low frequencies by it and blends the middle band
  (`rope_low_freq_factor`, `rope_high_freq_factor`, `rope_original_max_len`), as Llama 3.1+
  does. Sliding layers use `local_rope_theta` unscaled when it is set (Gemma 3's local layers),
  else the same RoPE as the others.

  Layers: `layer_types[i]` is "full" (causal attention over everything before) or "sliding"
  (only the last `sliding_window` positions, the query's own included); empty means all full.
  `nope_layers` attend without rotary positions (SmolLM3). `query_pre_attn_scalar` s scales the
  attention logits by s**-0.5 instead of head_dim**-0.5 (Gemma 3).
  """

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
  qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2)
  init_std: float = 0.02
  family: str = "llama"
  activation: str = "silu"
  rope_scaling: str = "default"
  rope_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  local_rope_theta: float | None = None
  layer_types: tuple[str, ...] = ()
  sliding_window: int | None = None
  nope_layers: tuple[int, ...] = ()
  query_pre_attn_scalar: float | None = None

  def __post_init__(self):
    # ml_collections and JSON hand sequences over as lists; the config must stay hashable.
    object.__setattr__(self, "layer_types", tuple(self.layer_types))
    object.__setattr__(self, "nope_layers", tuple(int(i) for i in self.nope_layers))
    for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
      if getattr(self, name) <= 0:
        raise ModelConfigError(f"LlamaConfig.{name} must be positive, got {getattr(self, name)}.")
    if self.n_heads % self.n_kv_heads:
      raise ModelConfigError(f"n_heads={self.n_heads} must be a multiple of "
                             f"n_kv_heads={self.n_kv_heads}.")
    if self.head_dim is None and self.dim % self.n_heads:
      raise ModelConfigError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}; set head_dim.")
    if self.hd % 2:
      raise ModelConfigError(f"head_dim={self.hd} must be even for RoPE.")
    for name, allowed in (("dtype", DTYPES), ("param_dtype", DTYPES), ("family", FAMILIES),
                          ("activation", ACTIVATIONS), ("rope_scaling", ROPE_SCALINGS)):
      if getattr(self, name) not in allowed:
        raise ModelConfigError(f"LlamaConfig.{name}={getattr(self, name)!r}; use one of "
                               f"{sorted(allowed)}.")
    if self.layer_types and (len(self.layer_types) != self.n_layers
                             or not set(self.layer_types) <= set(LAYER_TYPES)):
      raise ModelConfigError(f"LlamaConfig.layer_types={self.layer_types} must name one of "
                             f"{LAYER_TYPES} for each of the {self.n_layers} layers (or be empty).")
    if "sliding" in self.layer_types and not (self.sliding_window or 0) > 0:
      raise ModelConfigError(f"sliding layers need sliding_window > 0, got {self.sliding_window}.")
    if any(not 0 <= i < self.n_layers for i in self.nope_layers):
      raise ModelConfigError(f"LlamaConfig.nope_layers={self.nope_layers} must lie in "
                             f"[0, {self.n_layers}).")
    if self.rope_scaling != "default" and not self.rope_factor > 0:
      raise ModelConfigError(f"rope_scaling={self.rope_scaling!r} needs rope_factor > 0.")
    if self.rope_scaling == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
      raise ModelConfigError("llama3 RoPE scaling needs rope_high_freq_factor > "
                             "rope_low_freq_factor.")

  @property
  def hd(self) -> int:
    """The per-head dimension."""
    return self.head_dim if self.head_dim is not None else self.dim // self.n_heads

  def window(self, layer: int) -> int | None:
    """How many positions layer `layer` attends to (the query's own included); None: all."""
    if self.layer_types and self.layer_types[layer] == "sliding":
      return self.sliding_window
    return None

  def rope_of(self, layer: int) -> dict | None:
    """Layer `layer`'s RoPE as `rope.inverse_frequencies` keywords; None for a layer without."""
    if layer in self.nope_layers:
      return None
    if self.window(layer) is not None and self.local_rope_theta is not None:
      return {"theta": self.local_rope_theta}
    return {"theta": self.rope_theta, "scaling": self.rope_scaling, "factor": self.rope_factor,
            "low_freq_factor": self.rope_low_freq_factor,
            "high_freq_factor": self.rope_high_freq_factor,
            "original_max_len": self.rope_original_max_len}

  def select_layers(self, layers: Sequence[int]) -> "LlamaConfig":
    """The config of a model made of these layers (in this order), each keeping its settings."""
    layers = [int(i) for i in layers]
    return self.replace(
        n_layers=len(layers),
        layer_types=tuple(self.layer_types[i] for i in layers) if self.layer_types else (),
        nope_layers=tuple(k for k, i in enumerate(layers) if i in self.nope_layers))

  def replace(self, **changes: Any) -> "LlamaConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "LlamaConfig":
    return cls(**d)
