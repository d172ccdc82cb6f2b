"""Hugging Face checkpoints: config.json + *.safetensors (sharded too) + tokenizer files.

`load_pretrained` reads the causal LMs of every family in `families.FAMILIES` (config.json in
either transformers layout, see hf_config.py); `save_pretrained` writes a directory that
`transformers` loads as the model's own family, so a distilled student can leave gkd. HF stores
Linear weights as [out, in]; gkd kernels are [in, out], hence the transposes.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from gkd.errors import ModelConfigError
from gkd.models import llama
from gkd.models.families import FAMILIES
from gkd.models.hf_config import config_from_hf, config_to_hf  # noqa: F401  (config_from_hf: API)
from gkd.models.tokenizer import CHATML, JINJA, Tokenizer, chat_template_jinja, check_fits

_PROJ = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
         "self_attn.o_proj": "attn.o", "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up",
         "mlp.down_proj": "mlp.down"}
# Buffers older transformers saved beside the weights; gkd recomputes them from config.json.
_DERIVED = ("rotary_emb.inv_freq",)


def _layer_names(cfg: llama.LlamaConfig) -> dict[str, str]:
  """{HF per-layer tensor name: gkd parameter name} of one layer, for the config's family."""
  names = {f"{src}.weight": f"{dst}.kernel" for src, dst in _PROJ.items()}
  if cfg.qkv_bias:
    names.update({f"self_attn.{x}_proj.bias": f"attn.{x}.bias" for x in "qkv"})
  family = FAMILIES[cfg.family]
  names.update({f"{src}.weight": f"{dst}.scale" for src, dst in family.hf_norms.items()})
  return names


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path} not found.") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON (truncated?): {e}") from e


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
  """Loads a Hugging Face causal-LM directory of a supported family into (Llama, Tokenizer).

  `dtype` is the compute dtype; `param_dtype` stores the weights (None: as `dtype`), e.g.
  float32 master weights with bf16 compute for a student that is trained. Tensors the model
  does not use are an error, not skipped: they would mean a part of the network is missing.
  """
  hf_dir = os.fspath(hf_dir)
  if not os.path.isdir(hf_dir):
    raise FileNotFoundError(f"Checkpoint directory not found: {hf_dir}")
  config_path = os.path.join(hf_dir, "config.json")
  try:
    cfg = config_from_hf(_read_json(config_path), dtype=dtype, param_dtype=param_dtype)
  except ModelConfigError as e:
    raise ModelConfigError(f"{config_path}: {e}") from None
  raw = _read_tensors(_weight_files(hf_dir))
  used = set()

  def get(name):
    if name not in raw:
      raise ValueError(f"{hf_dir}: tensor {name!r} is missing.")
    used.add(name)
    return raw[name]

  params = {"embed.embedding": get("model.embed_tokens.weight"),
            "final_norm.scale": get("model.norm.weight")}
  if not cfg.tie_embeddings:
    params["lm_head.kernel"] = get("lm_head.weight").T
  else:  # some tied checkpoints store the shared matrix twice; transformers uses the embedding
    used.add("lm_head.weight")
  for i in range(cfg.n_layers):
    for src, dst in _layer_names(cfg).items():
      value = get(f"model.layers.{i}.{src}")
      params[f"layers.{i}.{dst}"] = value.T if dst.endswith(".kernel") else value
  unused = sorted(k for k in set(raw) - used if not k.endswith(_DERIVED))
  if unused:
    raise ValueError(f"{hf_dir}: {len(unused)} tensor(s) the {cfg.family} model does not use, "
                     f"e.g. {unused[0]!r}: the config.json does not describe these weights.")
  tokenizer = _load_tokenizer(hf_dir)
  check_fits(tokenizer, cfg.vocab_size, hf_dir)
  return llama.from_flat_params(cfg, params), tokenizer


def _load_tokenizer(hf_dir: str) -> Tokenizer:
  path = os.path.join(hf_dir, "tokenizer.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found (only fast tokenizers are supported).")
  config_path = os.path.join(hf_dir, "tokenizer_config.json")
  config = _read_json(config_path) if os.path.exists(config_path) else {}
  template_path = os.path.join(hf_dir, "chat_template.jinja")  # newer transformers' own file
  template = open(template_path).read() if os.path.exists(template_path) else None
  try:
    return Tokenizer.from_tokenizer_json(path, config=config, template=template)
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
  hf = config_to_hf(cfg, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  os.makedirs(out_dir, exist_ok=True)
  flat = {k: np.asarray(v) for k, v in llama.flat_params(model).items()}
  out = {"model.embed_tokens.weight": flat["embed.embedding"],
         "model.norm.weight": flat["final_norm.scale"]}
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = flat["lm_head.kernel"].T
  for i in range(cfg.n_layers):
    for src, dst in _layer_names(cfg).items():
      value = flat[f"layers.{i}.{dst}"]
      out[f"model.layers.{i}.{src}"] = value.T if dst.endswith(".kernel") else value
  out = {k: np.ascontiguousarray(v) for k, v in out.items()}
  save_file(out, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)

  tokenizer.backend.save(os.path.join(out_dir, "tokenizer.json"))
  name = tokenizer.special_token
  tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(tokenizer.bos_id),
             "eos_token": name(tokenizer.eos_id), "pad_token": name(tokenizer.pad_id),
             "unk_token": name(tokenizer.unk_id),
             "model_max_length": cfg.max_seq_len, "gkd_chat_template": tokenizer.chat_template,
             "gkd_default_system": tokenizer.default_system}
  if tokenizer.chat_template == CHATML:
    tok_cfg["chat_template"] = chat_template_jinja(tokenizer)
  elif tokenizer.chat_template == JINJA:
    tok_cfg["chat_template"] = tokenizer.jinja_template
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(tok_cfg, f, indent=2)
