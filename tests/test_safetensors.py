"""save_pretrained / load_pretrained round trips and bad inputs, on tiny models."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gkd.models import llama
from gkd.models.safetensors import load_pretrained, save_pretrained
from tests import helpers
from test_gguf import tiny_bpe  # noqa: E402  (tests/ is on sys.path under pytest)


def tiny(vocab=264, **kw):
  return llama.init_model(llama.PRESETS["tiny"].replace(vocab_size=vocab, **kw), seed=1)


TOKENS = jnp.asarray([[5, 200, 7, 260, 3]])


@pytest.mark.parametrize("kw", [dict(tie_embeddings=True), dict(tie_embeddings=False),
                                dict(qkv_bias=True, tie_embeddings=False)])
def test_round_trip(tmp_path, kw):
  model, tok = tiny(**kw), tiny_bpe()
  if kw.get("qkv_bias"):  # non-zero biases so the test can fail
    b = model.layers[0].attn.k.bias
    b[...] = b[...] + 0.5
  save_pretrained(model, tok, str(tmp_path))
  assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(tmp_path))
  hf = json.load(open(tmp_path / "config.json"))
  assert hf["tie_word_embeddings"] == kw["tie_embeddings"]
  assert ("lm_head.weight" in load_file(str(tmp_path / "model.safetensors"))) != kw["tie_embeddings"]
  loaded, tok2 = load_pretrained(str(tmp_path))
  np.testing.assert_array_equal(helpers.forward(loaded, TOKENS), helpers.forward(model, TOKENS))
  assert tok2.encode("the 42") == tok.encode("the 42")
  assert (tok2.bos_id, tok2.eos_id, tok2.pad_id, tok2.chat_template) == (1, 2, 2, "chatml")


def test_sharded_bf16(tmp_path):
  model, tok = tiny(), tiny_bpe()
  save_pretrained(model, tok, str(tmp_path))
  weights = load_file(str(tmp_path / "model.safetensors"))
  os.remove(tmp_path / "model.safetensors")
  names = sorted(weights)
  shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
  for shard, keys in shards.items():
    save_file({k: weights[k] for k in keys}, str(tmp_path / shard))
  index = {"weight_map": {k: s for s, keys in shards.items() for k in keys}}
  json.dump(index, open(tmp_path / "model.safetensors.index.json", "w"))
  loaded, _ = load_pretrained(str(tmp_path))
  np.testing.assert_array_equal(helpers.forward(loaded, TOKENS), helpers.forward(model, TOKENS))
  half, _ = load_pretrained(str(tmp_path), dtype="bfloat16")
  assert half.embed.embedding[...].dtype == jnp.bfloat16
  np.testing.assert_allclose(helpers.forward(half, TOKENS), helpers.forward(model, TOKENS),
                             atol=0.1)


def test_bad_inputs(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    load_pretrained(str(tmp_path / "nope"))
  save_pretrained(tiny(), tiny_bpe(), str(tmp_path))
  cfg = json.load(open(tmp_path / "config.json"))
  # Unsupported architecture.
  json.dump({**cfg, "architectures": ["GPT2LMHeadModel"]}, open(tmp_path / "config.json", "w"))
  with pytest.raises(ValueError, match="Unsupported architecture 'GPT2LMHeadModel'"):
    load_pretrained(str(tmp_path))
  json.dump({**cfg, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            open(tmp_path / "config.json", "w"))
  with pytest.raises(ValueError, match="rope_scaling has no high_freq_factor"):
    load_pretrained(str(tmp_path))
  # Tokenizer larger than the embedding.
  json.dump({**cfg, "vocab_size": 256}, open(tmp_path / "config.json", "w"))
  with pytest.raises(ValueError, match="shape|tokenizer has 261 tokens"):
    load_pretrained(str(tmp_path))
  json.dump(cfg, open(tmp_path / "config.json", "w"))
  # Truncated weights.
  data = (tmp_path / "model.safetensors").read_bytes()
  (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="truncated"):
    load_pretrained(str(tmp_path))
  os.remove(tmp_path / "model.safetensors")
  with pytest.raises(FileNotFoundError, match="safetensors"):
    load_pretrained(str(tmp_path))


def test_settings_a_family_cannot_state_are_not_exported(tmp_path):
  with pytest.raises(ValueError, match="LlamaForCausalLM has no config.json field for nope_layers"):
    save_pretrained(tiny(nope_layers=(1,)), tiny_bpe(), str(tmp_path))


def test_vocab_mismatch_message(tmp_path):
  save_pretrained(tiny(vocab=264), tiny_bpe(), str(tmp_path))
  # Shrink the model to 256 rows consistently; the 261-token tokenizer no longer fits.
  w = load_file(str(tmp_path / "model.safetensors"))
  w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][:256]
  save_file(w, str(tmp_path / "model.safetensors"))
  cfg = json.load(open(tmp_path / "config.json"))
  json.dump({**cfg, "vocab_size": 256}, open(tmp_path / "config.json", "w"))
  with pytest.raises(ValueError, match="tokenizer has 261 tokens .* only 256 rows"):
    load_pretrained(str(tmp_path))


def test_char_tokenizer_round_trips_with_its_unknown_check(tmp_path):
  from gkd.data.tasks import testbed_tokenizer
  from gkd.models import llama, load_pretrained, save_pretrained

  tok = testbed_tokenizer()
  model = llama.init_model(llama.LlamaConfig(vocab_size=tok.vocab_size, dim=16, n_layers=1,
                                             n_heads=2, n_kv_heads=1, ffn_dim=32), 0)
  save_pretrained(model, tok, str(tmp_path))
  _, loaded = load_pretrained(str(tmp_path))
  text = "-9-(9*-5)=9*-5=-45. Answer: 36"
  assert loaded.encode(text, add_bos=True) == tok.encode(text, add_bos=True)
  assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.unk_id) == (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id)
  assert loaded.decode(loaded.encode(text)) == text
  with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
    loaded.encode("1 + ∑")
