"""The model families gkd runs, one entry each: where a family departs from Llama.

Every family is the one decoder of `transformer.py`: pre-norm blocks of grouped-query attention
with rotary positions and a gated MLP. An entry names what the architecture itself fixes:

  qk_norm           an RMSNorm over each head's queries and keys, before RoPE (Qwen3, Gemma 3)
  norm_plus_one     every RMSNorm multiplies by (1 + weight), weights stored around 0 (Gemma)
  sandwich_norms    a second norm on the attention and MLP outputs, before each residual add
                    (Gemma 3)
  scale_embeddings  token embeddings are multiplied by sqrt(dim) (Gemma)

and how its Hugging Face checkpoints spell things: the class in config.json's `architectures`,
the per-layer norm weights, the config.json fields it reads beyond the common ones (with
transformers' defaults for those a file leaves out) and a function that reads its per-layer
settings (sliding windows, layers without RoPE) into `LlamaConfig` fields. What varies per
checkpoint (sizes, RoPE bases and scaling, the activation, windows) lives in `LlamaConfig`;
`hf_config.py` is the shared reader.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from gkd.errors import ModelConfigError


def refuse(field: str, value, why: str) -> ModelConfigError:
  """The one-line error for a config.json field gkd does not compute as its value asks."""
  return ModelConfigError(f"config.json field {field}={value!r} is not supported: {why}.")


@dataclasses.dataclass(frozen=True)
class Family:
  """An architecture's fixed traits and its Hugging Face names (see the module docstring)."""

  architecture: str
  model_type: str
  qk_norm: bool = False
  norm_plus_one: bool = False
  sandwich_norms: bool = False
  scale_embeddings: bool = False
  hf_fields: frozenset = frozenset()  # config.json fields read by `hf_layers` or the RoPE reader
  hf_defaults: dict = dataclasses.field(default_factory=dict)  # transformers' class defaults
  hf_layers: Callable[[Callable, int], dict] = lambda get, n: {}  # noqa: E731
  hf_activation: str = "hidden_act"  # the field naming the MLP's activation
  local_rope_field: str | None = None  # transformers 4's RoPE base of the sliding layers
  default_theta: float = 10000.0

  @property
  def hf_norms(self) -> dict[str, str]:
    """Per-layer Hugging Face norm weight names -> gkd parameter names (without `.scale`)."""
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"}
    if self.sandwich_norms:  # Gemma's post_attention_layernorm is the attention's output norm
      names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "attn_post_norm",
               "pre_feedforward_layernorm": "mlp_norm",
               "post_feedforward_layernorm": "mlp_post_norm"}
    if self.qk_norm:
      names.update({"self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm"})
    return names


def _full_attention_only(get, n: int) -> dict:
  """Qwen2, Qwen3 and SmolLM3 can declare sliding windows; every released checkpoint has them
  off, and gkd runs them only that way (their window rules are not checked against
  transformers here)."""
  if get("use_sliding_window"):
    raise refuse("use_sliding_window", True, "sliding windows are implemented for Mistral and "
                 "Gemma 3 only")
  types = get("layer_types")
  if types and any(t != "full_attention" for t in types):
    raise refuse("layer_types", types, "this family runs full attention in every layer")
  return {}


def _mistral_layers(get, n: int) -> dict:
  """Mistral: a window on every layer when `sliding_window` is set (v0.1), none when null."""
  window = get("sliding_window")
  return {} if window is None else {"layer_types": ("sliding",) * n, "sliding_window": int(window)}


def _gemma3_layers(get, n: int) -> dict:
  """Gemma 3: local sliding-window layers between global ones (`layer_types`, or every
  `sliding_window_pattern`-th layer global in older files); queries scaled by
  query_pre_attn_scalar**-0.5 instead of head_dim**-0.5."""
  for field in ("final_logit_softcapping", "attn_logit_softcapping"):
    if get(field) is not None:
      raise refuse(field, get(field), "soft-capping is not implemented (Gemma 3 has none)")
  if get("use_bidirectional_attention"):
    raise refuse("use_bidirectional_attention", True, "gkd's decoders are causal")
  types = get("layer_types")
  if types is None:
    pattern = get("sliding_window_pattern") or get("_sliding_window_pattern") or 6
    types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
  names = {"sliding_attention": "sliding", "full_attention": "full"}
  if len(types) != n or any(t not in names for t in types):
    raise refuse("layer_types", types, f"expected {n} entries of {sorted(names)}")
  window = get("sliding_window")
  if window is None and "sliding_attention" in types:
    raise refuse("sliding_window", window, "the sliding layers need a window")
  return {"layer_types": tuple(names[t] for t in types), "sliding_window": window,
          "query_pre_attn_scalar": float(get("query_pre_attn_scalar"))}


def _smollm3_layers(get, n: int) -> dict:
  """SmolLM3: layers whose `no_rope_layers` flag is 0 attend without RoPE (by default every
  `no_rope_layer_interval`-th layer)."""
  _full_attention_only(get, n)
  flags = get("no_rope_layers")
  if flags is None:
    flags = [int((i + 1) % get("no_rope_layer_interval") != 0) for i in range(n)]
  if len(flags) != n:
    raise refuse("no_rope_layers", flags, f"expected {n} entries")
  return {"nope_layers": tuple(i for i, use_rope in enumerate(flags) if not use_rope)}


_QWEN_WINDOW = frozenset({"use_sliding_window", "sliding_window", "max_window_layers",
                          "layer_types"})

FAMILIES: dict[str, Family] = {
  "llama": Family("LlamaForCausalLM", "llama"),
  "mistral": Family("MistralForCausalLM", "mistral", hf_fields=frozenset({"sliding_window"}),
                    hf_defaults={"num_key_value_heads": 8, "sliding_window": 4096},
                    hf_layers=_mistral_layers),
  "qwen2": Family("Qwen2ForCausalLM", "qwen2", hf_fields=_QWEN_WINDOW,
                  hf_defaults={"num_key_value_heads": 32}, hf_layers=_full_attention_only),
  "qwen3": Family("Qwen3ForCausalLM", "qwen3", qk_norm=True, hf_fields=_QWEN_WINDOW,
                  hf_defaults={"num_key_value_heads": 32, "head_dim": 128},
                  hf_layers=_full_attention_only),
  "smollm3": Family("SmolLM3ForCausalLM", "smollm3",
                    hf_fields=_QWEN_WINDOW | {"no_rope_layers", "no_rope_layer_interval"},
                    hf_defaults={"num_key_value_heads": 4, "tie_word_embeddings": True,
                                 "no_rope_layer_interval": 4},
                    hf_layers=_smollm3_layers, default_theta=2e6),
  "gemma3": Family("Gemma3ForCausalLM", "gemma3_text", qk_norm=True, norm_plus_one=True,
                   sandwich_norms=True, scale_embeddings=True,
                   hf_fields=frozenset({
                       "hidden_activation", "query_pre_attn_scalar", "sliding_window",
                       "layer_types", "sliding_window_pattern", "_sliding_window_pattern",
                       "rope_local_base_freq", "final_logit_softcapping", "attn_logit_softcapping",
                       "use_bidirectional_attention", "cache_implementation"}),
                   hf_defaults={"num_key_value_heads": 4, "head_dim": 256,
                                "hidden_activation": "gelu_pytorch_tanh",
                                "tie_word_embeddings": True, "query_pre_attn_scalar": 256,
                                "sliding_window": 4096, "rope_local_base_freq": 10000.0},
                   hf_layers=_gemma3_layers, hf_activation="hidden_activation",
                   local_rope_field="rope_local_base_freq",
                   default_theta=1e6),
}

BY_ARCHITECTURE = {f.architecture: name for name, f in FAMILIES.items()}
