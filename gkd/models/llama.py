"""The decoder-only transformer's public names, gathered in one place.

One decoder runs every family gkd supports (Llama 2/3.x and SmolLM2, Mistral, Qwen2, Qwen3,
SmolLM3, Gemma 3 text): RMSNorm, rotary position embeddings (Hugging Face's "rotate-half"
layout), a gated MLP, grouped-query attention, tied or untied embeddings, plus each family's
departures listed in `families.py`. Its parts live in their own modules:

  config.py        LlamaConfig: sizes, numerics, RoPE, per-layer windows and RoPE-less layers
  families.py      what each family changes, and how its Hugging Face files name things
  rope.py          rotary frequencies (plain, linear, Llama 3) and the rotation
  layers.py        RMSNorm, attention, the gated MLP, the block
  transformer.py   the model (`Llama`), its masks and the functional KV cache
  construction.py  random init, students cut from a teacher, flat parameter views
  presets.py       named shapes (a test size and released checkpoints)

Parameter names are stable because the sharding code and the checkpoint converters match on
them: embed.embedding [V,D], layers.{i}.attn.{q,k,v,o}.kernel [in,out] (+ .bias for q/k/v),
layers.{i}.attn.{q_norm,k_norm}.scale [hd] (Qwen3, Gemma 3), layers.{i}.mlp.{gate,up,down}.kernel,
layers.{i}.{attn_norm,mlp_norm}.scale (+ attn_post_norm, mlp_post_norm for Gemma 3),
final_norm.scale, lm_head.kernel [D,V] (untied only).
"""

from gkd.models.config import DTYPES, LlamaConfig  # noqa: F401
from gkd.models.construction import (  # noqa: F401
    count_params, derive_student, flat_params, from_flat_params, init_model)
from gkd.models.layers import MLP, Attention, Block, RMSNorm  # noqa: F401
from gkd.models.presets import PRESETS  # noqa: F401
from gkd.models.transformer import KVCache, Llama, batch_full, default_positions  # noqa: F401
