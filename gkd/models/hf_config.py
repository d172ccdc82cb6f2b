"""Hugging Face config.json <-> `LlamaConfig`, for every family of `families.FAMILIES`.

Both layouts are read. transformers 4 writes the RoPE settings at the top level (`rope_theta`,
`rope_scaling`, and Gemma 3's `rope_local_base_freq` for its sliding layers); transformers 5
writes one `rope_parameters` block, nested by layer type for Gemma 3. A file carrying both must
agree. Export writes the transformers 4 layout, which both versions read.

Never silently wrong: every config.json field is read (the common fields here, a family's own
in its entry), known not to change what the model computes (`HARMLESS`: bookkeeping,
generation defaults, options of other model kinds at their off values), or refused with a
one-line `ModelConfigError` naming the field and its value. A field transformers adds later is
refused until someone checks it and lists it here.
"""

from __future__ import annotations

from gkd.errors import ModelConfigError
from gkd.models.config import LlamaConfig
from gkd.models.families import BY_ARCHITECTURE, FAMILIES, refuse

COMMON = frozenset({
  "architectures", "model_type", "vocab_size", "hidden_size", "num_hidden_layers",
  "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "hidden_act",
  "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "rope_theta", "rope_scaling",
  "rope_parameters"})
# Read only to check they hold the value that leaves the computation as gkd runs it.
OFF_VALUES = {"attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
              "partial_rotary_factor": 1.0, "is_encoder_decoder": False,
              "add_cross_attention": False, "tie_encoder_decoder": False, "pruned_heads": {},
              "cross_attention_hidden_size": None, "rope_interleaved": False}
HARMLESS = frozenset({
  # bookkeeping and token ids (the tokenizer files are what gkd reads for those)
  "_name_or_path", "_commit_hash", "_attn_implementation_autoset", "transformers_version",
  "torch_dtype", "dtype", "use_cache", "initializer_range", "bos_token_id", "eos_token_id",
  "pad_token_id", "sep_token_id", "decoder_start_token_id", "id2label", "label2id",
  "problem_type", "finetuning_task", "tokenizer_class", "prefix", "task_specific_params",
  "return_dict", "output_attentions", "output_hidden_states", "torchscript", "use_bfloat16",
  "tf_legacy_loss", "is_decoder", "is_llama_config", "transformers.js_config", "unsloth_version",
  # a pure re-association of the same sums (tensor-parallel emulation, chunked feed-forward)
  "pretraining_tp", "chunk_size_feed_forward",
  # generation defaults: gkd's samplers take theirs from the run's config
  "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
  "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
  "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
  "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
  "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty",
  "suppress_tokens", "begin_suppress_tokens"})
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh"}
_EXPORT_ACTIVATIONS = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}
_ROPE_KEYS = {"default": set(), "linear": {"factor"},
              "llama3": {"factor", "low_freq_factor", "high_freq_factor",
                         "original_max_position_embeddings"}}
_LAYER_TYPE_NAMES = {"full": "full_attention", "sliding": "sliding_attention"}


def family_of(hf: dict) -> str:
  """The gkd family of a config.json dict, by its `architectures` entry."""
  archs = hf.get("architectures") or [hf.get("model_type", "?")]
  if archs[0] not in BY_ARCHITECTURE:
    raise ModelConfigError(f"Unsupported architecture {archs[0]!r}; supported: "
                           f"{sorted(BY_ARCHITECTURE)}.")
  return BY_ARCHITECTURE[archs[0]]


def _rope_settings(table: dict, where: str, max_len: int, default_theta: float) -> dict:
  """LlamaConfig RoPE fields from one RoPE table (transformers 5's block or 4's rope_scaling)."""
  kind = table.get("rope_type", table.get("type")) or "default"
  if kind not in _ROPE_KEYS:
    raise refuse(f"{where}.rope_type", kind, f"gkd implements RoPE types {sorted(_ROPE_KEYS)}")
  extra = set(table) - _ROPE_KEYS[kind] - {"rope_type", "type", "rope_theta",
                                           "partial_rotary_factor"}
  if extra:
    key = sorted(extra)[0]
    raise refuse(f"{where}.{key}", table[key], f"not part of gkd's {kind!r} RoPE")
  if table.get("partial_rotary_factor", 1.0) not in (None, 1.0):
    raise refuse(f"{where}.partial_rotary_factor", table["partial_rotary_factor"],
                 "gkd rotates whole heads")
  missing = sorted(_ROPE_KEYS[kind] - {"original_max_position_embeddings"} - set(table))
  if missing:
    raise ModelConfigError(f"config.json {where} has no {missing[0]}, which {kind!r} RoPE needs.")
  out = {"rope_theta": float(table.get("rope_theta") or default_theta), "rope_scaling": kind}
  if kind != "default":
    out["rope_factor"] = float(table["factor"])
  if kind == "llama3":
    out.update(rope_low_freq_factor=float(table["low_freq_factor"]),
               rope_high_freq_factor=float(table["high_freq_factor"]),
               rope_original_max_len=int(table.get("original_max_position_embeddings") or max_len))
  return out


def _rope(hf: dict, family: str, max_len: int) -> dict:
  """The RoPE fields from either layout: {"full": settings, "sliding": settings}."""
  fam = FAMILIES[family]
  local_default = fam.hf_defaults.get(fam.local_rope_field)
  tables = {}
  if hf.get("rope_parameters"):
    block = hf["rope_parameters"]
    if set(block) & set(_LAYER_TYPE_NAMES.values()):  # nested by layer type
      if not fam.local_rope_field:
        raise refuse("rope_parameters", block, f"{fam.architecture} has one RoPE for all layers")
      for kind, name in _LAYER_TYPE_NAMES.items():
        theta = fam.default_theta if kind == "full" else local_default
        tables[kind] = _rope_settings(block.get(name) or {}, f"rope_parameters.{name}", max_len,
                                      theta)
    else:
      if fam.local_rope_field:
        raise refuse("rope_parameters", block, "expected one block per layer type")
      tables["full"] = tables["sliding"] = _rope_settings(block, "rope_parameters", max_len,
                                                          fam.default_theta)
  legacy = {"rope_theta": hf.get("rope_theta") or fam.default_theta,
            **(hf.get("rope_scaling") or {})}
  old = {"full": _rope_settings(legacy, "rope_scaling", max_len, fam.default_theta)}
  old["sliding"] = old["full"]
  if fam.local_rope_field:
    old["sliding"] = {"rope_theta": float(hf.get(fam.local_rope_field) or local_default),
                      "rope_scaling": "default"}
  legacy_fields = ("rope_theta", "rope_scaling", fam.local_rope_field)
  if tables and any(hf.get(k) is not None for k in legacy_fields):
    if tables != old:
      raise refuse("rope_parameters", hf["rope_parameters"], "it disagrees with rope_theta/"
                   f"rope_scaling {hf.get('rope_theta')!r}/{hf.get('rope_scaling')!r}")
  return tables or old


def config_from_hf(hf: dict, *, dtype: str = "float32",
                   param_dtype: str | None = None) -> LlamaConfig:
  """A LlamaConfig from a Hugging Face config.json dict; fields gkd does not compute are refused.

  `dtype` is the compute dtype, `param_dtype` the storage dtype (None: the same as `dtype`).
  """
  family = family_of(hf)
  fam = FAMILIES[family]
  read = COMMON | HARMLESS | set(OFF_VALUES) | fam.hf_fields | {fam.hf_activation}
  unknown = sorted(set(hf) - read)
  if unknown:
    raise refuse(unknown[0], hf[unknown[0]], f"{fam.architecture} in gkd does not read it, and it "
                 "may change the computation")
  for field, off in OFF_VALUES.items():
    if hf.get(field) not in (None, off):
      raise refuse(field, hf[field], f"gkd implements only {field}={off!r}")

  def get(field):
    return hf[field] if field in hf else fam.hf_defaults.get(field)

  def need(field):
    if hf.get(field) is None:
      raise ModelConfigError(f"config.json has no {field}.")
    return int(hf[field])

  act = get(fam.hf_activation) or "silu"
  if act not in ACTIVATIONS:
    raise refuse(fam.hf_activation, act, f"gkd implements {sorted(ACTIVATIONS)}")
  dim, n_heads = need("hidden_size"), need("num_attention_heads")
  n_layers = need("num_hidden_layers")
  head_dim = get("head_dim") or dim // n_heads
  max_len = int(get("max_position_embeddings") or 2048)
  rope = _rope(hf, family, max_len)
  layers = fam.hf_layers(get, n_layers)
  if layers.get("query_pre_attn_scalar") == head_dim:  # the usual head_dim**-0.5
    layers["query_pre_attn_scalar"] = None
  if fam.local_rope_field:
    if rope["sliding"]["rope_scaling"] != "default":
      raise refuse("rope_parameters.sliding_attention", rope["sliding"], "gkd scales only the "
                   "global layers' RoPE")
    layers["local_rope_theta"] = rope["sliding"]["rope_theta"]
  tie = get("tie_word_embeddings")
  return LlamaConfig(
    vocab_size=need("vocab_size"), dim=dim, n_layers=n_layers, n_heads=n_heads,
    n_kv_heads=int(get("num_key_value_heads") or n_heads), ffn_dim=need("intermediate_size"),
    max_seq_len=max_len, norm_eps=float(get("rms_norm_eps") or 1e-6),
    tie_embeddings=bool(tie) if tie is not None else False,
    head_dim=None if head_dim == dim // n_heads else int(head_dim),
    qkv_bias=family == "qwen2", family=family, activation=ACTIVATIONS[act], dtype=dtype,
    param_dtype=param_dtype or dtype, **rope["full"], **layers)


def config_to_hf(cfg: LlamaConfig, *, bos_id: int | None, eos_id: int, pad_id: int) -> dict:
  """config.json (transformers 4 layout) for `cfg`; refuses settings its family cannot state.

  A Llama-family config with q/k/v biases is exported as Qwen2, the family that has them.
  """
  family = "qwen2" if cfg.family == "llama" and cfg.qkv_bias else cfg.family
  fam = FAMILIES[family]
  scaling = None
  if cfg.rope_scaling != "default":
    scaling = {"rope_type": cfg.rope_scaling, "factor": cfg.rope_factor}
  if cfg.rope_scaling == "llama3":
    scaling.update(low_freq_factor=cfg.rope_low_freq_factor,
                   high_freq_factor=cfg.rope_high_freq_factor,
                   original_max_position_embeddings=cfg.rope_original_max_len)
  candidates = {
    "architectures": [fam.architecture], "model_type": fam.model_type,
    "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers,
    "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.hd,
    "intermediate_size": cfg.ffn_dim, fam.hf_activation: _EXPORT_ACTIVATIONS[cfg.activation],
    "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
    "tie_word_embeddings": cfg.tie_embeddings, "rope_theta": cfg.rope_theta,
    "rope_scaling": scaling, "attention_bias": False, "mlp_bias": False,
    "sliding_window": cfg.sliding_window, "use_sliding_window": False,
    "query_pre_attn_scalar": cfg.query_pre_attn_scalar or cfg.hd,
    "rope_local_base_freq": cfg.local_rope_theta,
    "no_rope_layers": [int(i not in cfg.nope_layers) for i in range(cfg.n_layers)],
    "torch_dtype": cfg.param_dtype, "bos_token_id": bos_id, "eos_token_id": eos_id,
    "pad_token_id": pad_id}
  if cfg.layer_types:
    candidates["layer_types"] = [_LAYER_TYPE_NAMES[t] for t in cfg.layer_types]
  allowed = COMMON | HARMLESS | set(OFF_VALUES) | fam.hf_fields | {fam.hf_activation}
  hf = {k: v for k, v in candidates.items() if k in allowed}
  got, want = _computed(config_from_hf(hf)), _computed(cfg.replace(family=family))
  diff = sorted(k for k in want if got[k] != want[k])
  if diff:
    raise ModelConfigError(f"{fam.architecture} has no config.json field for {diff[0]}="
                           f"{getattr(cfg, diff[0])!r}; this model cannot be exported as it.")
  return hf


def _computed(cfg: LlamaConfig) -> dict:
  """The fields that decide what a model computes, with equivalent spellings made equal."""
  out = cfg.to_dict()
  for field in ("init_std", "dtype", "param_dtype"):
    del out[field]
  out["head_dim"] = cfg.hd
  out["query_pre_attn_scalar"] = cfg.query_pre_attn_scalar or cfg.hd
  return out
