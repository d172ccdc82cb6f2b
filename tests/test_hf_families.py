"""Every model family against transformers: logits, greedy decoding, both config layouts, chat.

The references in tests/fixtures/hf/ were computed by transformers 5.23 (and re-checked under
4.57 with the older config layout) by tests/fixtures/hf/make_fixtures.py: tiny seeded models of
Llama 3.x (llama3 RoPE scaling), Qwen2, Qwen3, Gemma 3, Mistral (sliding window) and SmolLM3
(layers without RoPE), their logits on a batch with and without left padding, 8 greedy tokens,
and conversations rendered by each family's chat template.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gkd import sampling
from gkd.errors import ModelConfigError, UserError
from gkd.models import hf_config, llama, load_pretrained, save_pretrained
from tests import helpers

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf")
FAMILIES = ("llama3", "qwen2", "qwen3", "gemma3", "mistral", "smollm3")
GKD_FAMILY = {"llama3": "llama"}
FILES = ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def hf_dir(tmp_path, family: str, layout: str = "v5", change: dict | None = None) -> str:
  """A checkpoint directory of the fixture with the config of `layout`, edited by `change`
  (a value of None deletes the field)."""
  out = tmp_path / f"{family}_{layout}"
  out.mkdir(exist_ok=True)
  for name in FILES:
    shutil.copy(os.path.join(FIXTURES, family, name), out / name)
  config = read_config(family, layout)
  for key, value in (change or {}).items():
    config.pop(key) if value is None else config.__setitem__(key, value)
  (out / "config.json").write_text(json.dumps(config))
  return str(out)


def read_config(family: str, layout: str = "v5") -> dict:
  name = "config.json" if layout == "v5" else "config_v4.json"
  with open(os.path.join(FIXTURES, family, name)) as f:
    return json.load(f)


def reference(family: str):
  return np.load(os.path.join(FIXTURES, family, "reference.npz"))


def logit_error(model, ref) -> tuple[float, float]:
  """(max |gkd − transformers| over real positions, the reference's largest |logit|)."""
  got = np.asarray(helpers.forward(model, jnp.asarray(ref["tokens"]),
                                   attention_mask=jnp.asarray(ref["mask"])))
  real = ref["mask"]
  want = ref["logits"][real]
  return float(np.abs(got[real] - want).max()), float(np.abs(want).max())


@pytest.mark.parametrize("layout", ["v5", "v4"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(tmp_path, family, layout):
  model, _ = load_pretrained(hf_dir(tmp_path, family, layout))
  assert model.config.family == GKD_FAMILY.get(family, family)
  ref = reference(family)
  err, scale = logit_error(model, ref)
  assert err <= 1e-4 * scale, (err, scale)
  # keep_from: the kept positions' states are the full forward's, windows and padding included.
  tokens, mask = jnp.asarray(ref["tokens"]), jnp.asarray(ref["mask"])
  full, _ = model.hidden_states(tokens, attention_mask=mask)
  kept, _ = model.hidden_states(tokens, attention_mask=mask, keep_from=7)
  np.testing.assert_allclose(kept, full[:, 7:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_both_layouts_read_to_one_config(family):
  assert hf_config.config_from_hf(read_config(family, "v4")) == \
      hf_config.config_from_hf(read_config(family, "v5"))


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_decoding_with_the_kv_cache_matches_transformers(tmp_path, family):
  """8 greedy tokens from gkd's sampler (prefill, then cached steps past the sliding window)
  equal transformers' generate; each cached step's logits equal a full forward's."""
  model, _ = load_pretrained(hf_dir(tmp_path, family))
  ref = reference(family)
  prompt, mask = jnp.asarray(ref["tokens"]), jnp.asarray(ref["mask"])
  out = sampling.sample(model, prompt, mask, rng=jax.random.key(0), max_new_tokens=8,
                        temperature=0.0, eos_id=model.config.vocab_size)  # an id never drawn
  np.testing.assert_array_equal(np.asarray(out.tokens), ref["greedy"])

  seq = jnp.concatenate([prompt, out.tokens], 1)
  full = helpers.forward(model, seq,
                         attention_mask=jnp.concatenate([mask, jnp.ones((2, 8), bool)], 1))
  cache = model.init_cache(2, seq.shape[1])
  h, cache = model.forward_cached(prompt, cache, positions=llama.default_positions(mask),
                                  attention_mask=mask)
  steps = [model.logits(h[:, -1])]
  for i in range(7):
    pos = mask.sum(1, keepdims=True) + i
    h, cache = model.forward_cached(out.tokens[:, i:i + 1], cache, positions=pos)
    steps.append(model.logits(h[:, 0]))
  np.testing.assert_allclose(jnp.stack(steps, 1), full[:, 11:19], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family, change", [
    ("llama3", {"rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}}),
    ("gemma3", {"sliding_window": 64}),
    ("gemma3", {"rope_parameters": {"full_attention": {"rope_theta": 1e6},
                                    "sliding_attention": {"rope_theta": 1e6}}}),
    ("gemma3", {"query_pre_attn_scalar": 16}),
    ("mistral", {"sliding_window": None}),
    ("smollm3", {"no_rope_layers": [1, 1, 1]}),
], ids=lambda x: x if isinstance(x, str) else "-".join(x))
def test_the_references_see_each_family_feature(tmp_path, family, change):
  """Each feature changes the logits well beyond the tolerance: a loader ignoring it fails."""
  model, _ = load_pretrained(hf_dir(tmp_path, family, change=change))
  err, scale = logit_error(model, reference(family))
  assert err > 1e-2 * scale, (err, scale)


def test_bookkeeping_fields_of_released_configs_load(tmp_path):
  # Fields SmolLM-family and fine-tuned checkpoints carry that change nothing computed.
  model, _ = load_pretrained(hf_dir(tmp_path, "llama3", change={
      "is_llama_config": True, "rope_interleaved": False, "unsloth_version": "2025.1",
      "transformers.js_config": {"kv_cache_dtype": {"fp16": "float16"}}, "pretraining_tp": 1,
      "torch_dtype": "bfloat16", "eos_token_id": [2, 3], "use_cache": True}))
  err, scale = logit_error(model, reference("llama3"))
  assert err <= 1e-4 * scale


def test_older_gemma3_files_name_the_pattern_instead_of_the_layer_types(tmp_path):
  # Every 3rd layer global: sliding, sliding, full, sliding, as the fixture's layer_types say.
  path = hf_dir(tmp_path, "gemma3", "v4", {"layer_types": None, "_sliding_window_pattern": None,
                                           "sliding_window_pattern": 3})
  model, _ = load_pretrained(path)
  assert model.config.layer_types == ("sliding", "sliding", "full", "sliding")
  err, scale = logit_error(model, reference("gemma3"))
  assert err <= 1e-4 * scale


@pytest.mark.parametrize("family, change, message", [
    ("llama3", {"rope_parameters": {"rope_theta": 5e5, "rope_type": "yarn", "factor": 4.0}},
     "rope_parameters.rope_type='yarn'"),
    ("llama3", {"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0}},
     "rope_parameters has no high_freq_factor"),
    ("llama3", {"rope_theta": 1e4}, "disagrees with rope_theta"),
    ("llama3", {"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
    ("llama3", {"mlp_bias": True}, "mlp_bias=True"),
    ("llama3", {"attention_dropout": 0.1}, "attention_dropout=0.1"),
    ("llama3", {"quantization_config": {"quant_method": "gptq"}}, "quantization_config="),
    ("qwen3", {"use_sliding_window": True, "sliding_window": 4}, "use_sliding_window=True"),
    ("qwen3", {"architectures": ["Qwen3MoeForCausalLM"]}, "Unsupported architecture 'Qwen3Moe"),
    ("gemma3", {"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0"),
    ("gemma3", {"hidden_activation": "gelu"}, "hidden_activation='gelu'"),
    ("gemma3", {"rope_parameters": {"rope_theta": 1e6}}, "one block per layer type"),
    ("gemma3", {"architectures": ["Gemma3ForConditionalGeneration"]}, "Unsupported architecture"),
    ("mistral", {"layer_types": ["full_attention"] * 2}, "layer_types="),
    ("smollm3", {"use_sliding_window": True, "sliding_window": 4}, "use_sliding_window=True"),
])
def test_unimplemented_fields_are_refused_by_name(tmp_path, family, change, message):
  with pytest.raises(ModelConfigError, match=message) as caught:
    load_pretrained(hf_dir(tmp_path, family, change=change))
  assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)


def test_unused_weights_are_refused(tmp_path):
  # Qwen3's q/k norms under a Llama config: the norms would be dropped without a word.
  path = hf_dir(tmp_path, "qwen3", change={
      "architectures": ["LlamaForCausalLM"], "layer_types": None, "use_sliding_window": None,
      "sliding_window": None, "max_window_layers": None})
  with pytest.raises(ValueError, match="does not use, e.g. 'model.layers.0.self_attn.k_norm"):
    load_pretrained(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trips(tmp_path, family):
  model, tokenizer = load_pretrained(hf_dir(tmp_path, family))
  save_pretrained(model, tokenizer, str(tmp_path / "out"))
  again, tok2 = load_pretrained(str(tmp_path / "out"))
  assert again.config == model.config
  ref = reference(family)
  tokens = jnp.asarray(ref["tokens"])
  np.testing.assert_array_equal(helpers.forward(again, tokens), helpers.forward(model, tokens))
  chat = [{"role": "user", "content": "Say hi."}]
  assert tok2.apply_chat_template(chat) == tokenizer.apply_chat_template(chat)
  written = json.loads((tmp_path / "out" / "config.json").read_text())
  assert written["architectures"] == read_config(family)["architectures"]


def test_a_derived_gemma3_student_keeps_each_layers_attention(tmp_path):
  from flax import nnx
  teacher, _ = load_pretrained(hf_dir(tmp_path, "gemma3"))
  student = llama.derive_student(teacher, layers=[1, 2], rngs=nnx.Rngs(0))
  assert student.config.layer_types == ("sliding", "full")
  smollm3, _ = load_pretrained(hf_dir(tmp_path, "smollm3"))
  assert smollm3.config.nope_layers == (1,)
  assert llama.derive_student(smollm3, layers=[1, 2], rngs=nnx.Rngs(0)).config.nope_layers == (0,)


def chats(family):
  with open(os.path.join(FIXTURES, family, "chat.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_templates_render_and_tokenize_as_transformers(tmp_path, family):
  _, tokenizer = load_pretrained(hf_dir(tmp_path, family))
  for chat in chats(family):
    text = tokenizer.apply_chat_template(
        chat["messages"], add_generation_prompt=chat["add_generation_prompt"], **chat["kwargs"])
    assert text == chat["text"]
    assert tokenizer.encode(text) == chat["ids"]
    # The data pipeline asks for a BOS: a template that writes one does not get a second.
    with_bos = tokenizer.encode(text, add_bos=True)
    assert with_bos == chat["ids"] if chat["ids"][:1] == [tokenizer.bos_id] else \
        with_bos == ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + chat["ids"]


def test_a_template_inside_tokenizer_config_and_a_template_refusal(tmp_path):
  """Older files keep the template in tokenizer_config.json (transformers 5 writes
  chat_template.jinja beside it): both render the same."""
  path = hf_dir(tmp_path, "gemma3")
  config = json.loads(open(os.path.join(path, "tokenizer_config.json")).read())
  config["chat_template"] = open(os.path.join(path, "chat_template.jinja")).read()
  os.remove(os.path.join(path, "chat_template.jinja"))
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  _, tokenizer = load_pretrained(path)
  first = chats("gemma3")[0]
  assert tokenizer.apply_chat_template(first["messages"]) == first["text"]
  with pytest.raises(ValueError, match="Roles must alternate"):
    tokenizer.apply_chat_template([{"role": "assistant", "content": "Hi!"}])
