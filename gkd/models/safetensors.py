"""Hugging Face checkpoints: config.json + *.safetensors (sharded too) + tokenizer.json.

`load_pretrained` reads Llama / Qwen2 / Mistral-style (SmolLM) causal LMs; `save_pretrained`
writes a LlamaForCausalLM (Qwen2ForCausalLM when q/k/v have biases) directory that
`transformers` loads, so a distilled student can leave gkd. HF stores Linear weights as
[out, in]; gkd kernels are [in, out], hence the transposes.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from gkd.models import llama
from gkd.models.tokenizer import CHATML, Tokenizer, chat_template_jinja, check_fits

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
_PROJ = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
         "self_attn.o_proj": "attn.o", "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up",
         "mlp.down_proj": "mlp.down"}
_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"}


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path} not found.") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON (truncated?): {e}") from e


def config_from_hf(hf: dict, *, dtype: str = "float32",
                   param_dtype: str | None = None) -> llama.LlamaConfig:
  """A LlamaConfig from a Hugging Face config.json dict; unsupported features fail loudly.

  `dtype` is the compute dtype, `param_dtype` the storage dtype (None: the same as `dtype`).
  """
  archs = hf.get("architectures") or [hf.get("model_type", "?")]
  if archs[0] not in SUPPORTED_ARCHITECTURES:
    raise ValueError(f"Unsupported architecture {archs[0]!r}; supported: {SUPPORTED_ARCHITECTURES}.")
  scaling = hf.get("rope_scaling")
  if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
    raise ValueError(f"Unsupported rope_scaling {scaling!r}.")
  if hf.get("mlp_bias") or (archs[0] != "Qwen2ForCausalLM" and hf.get("attention_bias")):
    raise ValueError("Unsupported: biases on the MLP or attention output projections.")
  if hf.get("use_sliding_window") or (archs[0] == "MistralForCausalLM" and hf.get("sliding_window")):
    raise ValueError("Unsupported: sliding-window attention.")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"Unsupported activation {hf['hidden_act']!r} (SwiGLU with silu only).")
  n_heads = hf["num_attention_heads"]
  head_dim = hf.get("head_dim") or hf["hidden_size"] // n_heads
  return llama.LlamaConfig(
    vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
    n_heads=n_heads, n_kv_heads=hf.get("num_key_value_heads") or n_heads,
    ffn_dim=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
    rope_theta=float(hf.get("rope_theta", 10000.0)), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
    tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    head_dim=None if head_dim == hf["hidden_size"] // n_heads else head_dim,
    qkv_bias=archs[0] == "Qwen2ForCausalLM", dtype=dtype,
    param_dtype=param_dtype or dtype)


def _weight_files(hf_dir: str) -> list[str]:
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.exists(index):
    shards = sorted(set(_read_json(index)["weight_map"].values()))
    outside = [s for s in shards if os.path.isabs(s) or os.path.normpath(s).startswith(os.pardir)]
    if outside:  # the index may name only files of its own directory
      raise ValueError(f"{index} names shard {outside[0]!r}, outside {hf_dir}.")
    return [os.path.join(hf_dir, s) for s in shards]
  single = os.path.join(hf_dir, "model.safetensors")
  if os.path.exists(single):
    return [single]
  found = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
  if not found:
    raise FileNotFoundError(f"No *.safetensors weights in {hf_dir}.")
  return [os.path.join(hf_dir, f) for f in found]


def _read_tensors(files: list[str]) -> dict[str, np.ndarray]:
  tensors = {}
  for path in files:
    if not os.path.exists(path):
      raise FileNotFoundError(f"Weight shard {path} not found.")
    try:
      with safe_open(path, framework="flax") as f:  # jax arrays: handles bf16 too
        for key in f.keys():
          tensors[key] = np.asarray(f.get_tensor(key), np.float32)
    except (OSError, ValueError, RuntimeError) as e:
      raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                       f"{e}") from e
    except Exception as e:  # safetensors raises its own SafetensorError
      raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): "
                       f"{e}") from e
  return tensors


def load_pretrained(hf_dir: str, *, dtype: str = "float32",
                    param_dtype: str | None = None) -> tuple[llama.Llama, Tokenizer]:
  """Loads a Llama/Qwen2/SmolLM-style Hugging Face directory into (Llama, Tokenizer).

  `dtype` is the compute dtype; `param_dtype` stores the weights (None: as `dtype`), e.g.
  float32 master weights with bf16 compute for a student that is trained.
  """
  hf_dir = os.fspath(hf_dir)
  if not os.path.isdir(hf_dir):
    raise FileNotFoundError(f"Checkpoint directory not found: {hf_dir}")
  cfg = config_from_hf(_read_json(os.path.join(hf_dir, "config.json")), dtype=dtype,
                       param_dtype=param_dtype)
  raw = _read_tensors(_weight_files(hf_dir))

  def get(name):
    if name not in raw:
      raise ValueError(f"{hf_dir}: tensor {name!r} is missing.")
    return raw[name]

  params = {"embed.embedding": get("model.embed_tokens.weight"),
            "final_norm.scale": get("model.norm.weight")}
  if not cfg.tie_embeddings:
    params["lm_head.kernel"] = get("lm_head.weight").T
  for i in range(cfg.n_layers):
    pre = f"model.layers.{i}."
    for src, dst in _PROJ.items():
      params[f"layers.{i}.{dst}.kernel"] = get(f"{pre}{src}.weight").T
      if cfg.qkv_bias and dst in ("attn.q", "attn.k", "attn.v"):
        params[f"layers.{i}.{dst}.bias"] = get(f"{pre}{src}.bias")
    for src, dst in _NORMS.items():
      params[f"layers.{i}.{dst}.scale"] = get(f"{pre}{src}.weight")
  tokenizer = _load_tokenizer(hf_dir)
  check_fits(tokenizer, cfg.vocab_size, hf_dir)
  return llama.from_flat_params(cfg, params), tokenizer


def _load_tokenizer(hf_dir: str) -> Tokenizer:
  path = os.path.join(hf_dir, "tokenizer.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found (only fast tokenizers are supported).")
  config_path = os.path.join(hf_dir, "tokenizer_config.json")
  config = _read_json(config_path) if os.path.exists(config_path) else {}
  try:
    return Tokenizer.from_tokenizer_json(path, config=config)
  except Exception as e:
    if isinstance(e, ValueError) and "EOS" in str(e):
      raise
    raise ValueError(f"{path} is not a readable tokenizer.json (truncated?): {e}") from e


def save_pretrained(model: llama.Llama, tokenizer: Tokenizer, out_dir: str) -> None:
  """Writes config.json, model.safetensors, tokenizer.json and tokenizer_config.json."""
  cfg = model.config
  if tokenizer.vocab_size > cfg.vocab_size:
    raise ValueError(f"Tokenizer has {tokenizer.vocab_size} tokens, the model only "
                     f"{cfg.vocab_size} embedding rows.")
  os.makedirs(out_dir, exist_ok=True)
  flat = {k: np.asarray(v) for k, v in llama.flat_params(model).items()}
  out = {"model.embed_tokens.weight": flat["embed.embedding"],
         "model.norm.weight": flat["final_norm.scale"]}
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = flat["lm_head.kernel"].T
  for i in range(cfg.n_layers):
    pre = f"model.layers.{i}."
    for src, dst in _PROJ.items():
      out[f"{pre}{src}.weight"] = flat[f"layers.{i}.{dst}.kernel"].T
      if f"layers.{i}.{dst}.bias" in flat:
        out[f"{pre}{src}.bias"] = flat[f"layers.{i}.{dst}.bias"]
    for src, dst in _NORMS.items():
      out[f"{pre}{src}.weight"] = flat[f"layers.{i}.{dst}.scale"]
  out = {k: np.ascontiguousarray(v) for k, v in out.items()}
  save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})

  arch = "Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"
  hf = {"architectures": [arch], "model_type": "qwen2" if cfg.qkv_bias else "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.hd, "intermediate_size": cfg.ffn_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len, "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False, "mlp_bias": False, "rope_scaling": None,
        "torch_dtype": cfg.param_dtype, "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)

  tokenizer.backend.save(os.path.join(out_dir, "tokenizer.json"))
  name = lambda i: None if i is None else tokenizer.backend.id_to_token(i)  # noqa: E731
  tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(tokenizer.bos_id),
             "eos_token": name(tokenizer.eos_id), "pad_token": name(tokenizer.pad_id),
             "unk_token": name(tokenizer.unk_id),
             "model_max_length": cfg.max_seq_len, "gkd_chat_template": tokenizer.chat_template,
             "gkd_default_system": tokenizer.default_system}
  if tokenizer.chat_template == CHATML:
    tok_cfg["chat_template"] = chat_template_jinja(tokenizer)
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(tok_cfg, f, indent=2)
