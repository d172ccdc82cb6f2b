"""Tokenizers: one wrapper around a `tokenizers.Tokenizer` with special ids and a chat template.

Every tokenizer in gkd (SmolLM2's BPE rebuilt from GGUF metadata, a Hugging Face
tokenizer.json, or the small character-level one of the CPU testbed) is this class,
so the data pipeline, the sampler and the trainer see one interface. A Hugging Face
tokenizer keeps its model's own chat template and renders it as transformers does
(chat_template.py).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import tokenizers

from gkd.models import chat_template as jinja

CHATML = "chatml"  # <|im_start|>role\ncontent<|im_end|>\n  (SmolLM2 from GGUF)
PLAIN = "plain"  # "role: content\n" lines, for tokenizers without chat special tokens
JINJA = "jinja"  # the model's own Jinja template (`jinja_template`), from Hugging Face files


@dataclasses.dataclass
class Tokenizer:
  """A BPE (or char-level) tokenizer with the ids the rest of gkd needs.

  `pad_id` may equal `eos_id`: masks are never derived from pad ids, only from lengths and EOS.
  """

  backend: tokenizers.Tokenizer
  bos_id: int | None
  eos_id: int
  pad_id: int
  chat_template: str = PLAIN
  unk_id: int | None = None  # if set, text that encodes to it is an error, not silently mangled
  default_system: str | None = None  # ChatML: system message added when the chat has none (SmolLM2)
  jinja_template: str | None = None  # the template's source, when chat_template is JINJA

  def __post_init__(self):
    n = self.vocab_size
    for name in ("bos_id", "eos_id", "pad_id", "unk_id"):
      value = getattr(self, name)
      if value is not None and not 0 <= value < n:
        raise ValueError(f"Tokenizer {name}={value} is outside the vocabulary of size {n}.")
    if self.chat_template not in (CHATML, PLAIN, JINJA):
      raise ValueError(f"Unknown chat template {self.chat_template!r}; use {CHATML!r}, "
                       f"{PLAIN!r} or {JINJA!r}.")
    if (self.chat_template == JINJA) != (self.jinja_template is not None):
      raise ValueError("A Jinja chat template needs its source (jinja_template), and only it.")

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    """Token ids of `text`, special tokens written in it included; `add_bos` puts BOS first.

    A Jinja chat template writes the BOS its model expects (as transformers' templates do), so
    a BOS such a prompt already starts with is not repeated.
    """
    encoding = self.backend.encode(text, add_special_tokens=False)
    ids = encoding.ids
    if self.unk_id is not None and self.unk_id in ids:
      unknown = sorted({text[a:b] for (a, b), i in zip(encoding.offsets, ids) if i == self.unk_id})
      raise ValueError(f"Text has characters outside the tokenizer's vocabulary: {unknown!r}")
    if add_bos and self.bos_id is not None and not (self.chat_template == JINJA
                                                    and ids[:1] == [self.bos_id]):
      ids = [self.bos_id] + ids
    return ids

  def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def special_token(self, token_id: int | None) -> str | None:
    return None if token_id is None else self.backend.id_to_token(token_id)

  def apply_chat_template(self, messages: Sequence[dict], *, add_generation_prompt: bool = True,
                          **template_kwargs) -> str:
    """Formats [{"role": ..., "content": ...}] as a prompt string.

    `template_kwargs` are variables of a Jinja template (e.g. Qwen3's enable_thinking=False).
    """
    if self.chat_template == JINJA:
      ids = {"bos_token": self.bos_id, "eos_token": self.eos_id, "unk_token": self.unk_id}
      special = {name: self.special_token(i) for name, i in ids.items() if i is not None}
      return jinja.render(self.jinja_template, messages,
                          add_generation_prompt=add_generation_prompt, special_tokens=special,
                          **template_kwargs)
    if template_kwargs:
      raise ValueError(f"The {self.chat_template!r} chat template takes no variables, got "
                       f"{sorted(template_kwargs)}.")
    if self.chat_template == CHATML:
      if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": self.default_system}, *messages]
      text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
      return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")

  # -- builders for real checkpoints -----------------------------------------------------------
  @classmethod
  def from_bpe(cls, tokens: Sequence[str], merges: Sequence[str], *, special: Sequence[int],
               bos_id: int | None, eos_id: int, pad_id: int | None = None,
               pre: str = "gpt2", chat_template_text: str | None = None) -> "Tokenizer":
    """A byte-level BPE (GPT-2 family) from a token list, "a b" merges and special-token ids.

    `pre` is the GGUF pre-tokenizer name: "smollm" splits every digit on its own before the
    GPT-2 regex (as SmolLM2's tokenizer.json does); "gpt2"/"default" uses the regex only.
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
      raise ValueError("Tokenizer token list has duplicate entries.")
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact"):
      backend.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
          [tokenizers.pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("gpt2", "default", None):
      backend.pre_tokenizer = byte_level
    else:
      raise ValueError(f"Unsupported BPE pre-tokenizer {pre!r}; supported: smollm, gpt2.")
    backend.decoder = tokenizers.decoders.ByteLevel()
    backend.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                                for i in special])
    template, system = _template_kind(chat_template_text)
    return cls(backend, bos_id=bos_id, eos_id=eos_id, pad_id=eos_id if pad_id is None else pad_id,
               chat_template=template, default_system=system)

  @classmethod
  def from_tokenizer_json(cls, path: str, *, config: dict | None = None,
                          template: str | None = None) -> "Tokenizer":
    """Reads a Hugging Face tokenizer.json; special ids come from `config` (tokenizer_config.json).

    Without a config, eos is the first of <|im_end|>, <|endoftext|>, </s> that exists. The chat
    template is `template` (a chat_template.jinja file's text), else the config's
    `chat_template` (its "default" entry when it lists several), rendered with Jinja.
    """
    backend = tokenizers.Tokenizer.from_file(path)
    config = config or {}

    def token_id(key, fallbacks=()):
      value = config.get(key)
      if isinstance(value, dict):  # {"content": "...", ...} in older configs
        value = value.get("content")
      for name in ([value] if value else []) + list(fallbacks):
        i = backend.token_to_id(name)
        if i is not None:
          return i
      return None

    eos = token_id("eos_token", ["<|im_end|>", "<|endoftext|>", "</s>"])
    if eos is None:
      raise ValueError(f"{path}: cannot determine the EOS token (no eos_token in tokenizer_config).")
    source = template if template is not None else config.get("chat_template")
    if isinstance(source, list):  # [{"name": "default", "template": ...}, {"name": ...}, ...]
      source = {t.get("name"): t.get("template") for t in source}.get("default")
    kind, system = (JINJA, None) if source else (PLAIN, None)
    if "gkd_chat_template" in config:  # written by save_pretrained: gkd's own kinds round-trip
      kind, system = config["gkd_chat_template"], config.get("gkd_default_system")
    return cls(backend, bos_id=token_id("bos_token"), eos_id=eos,
               pad_id=token_id("pad_token") if token_id("pad_token") is not None else eos,
               unk_id=token_id("unk_token"), chat_template=kind, default_system=system,
               jinja_template=source if kind == JINJA else None)


def _template_kind(text: str | None) -> tuple[str, str | None]:
  """Maps a Jinja chat template to (CHATML or PLAIN, the default system message if any)."""
  if not text or "<|im_start|>" not in text:
    return PLAIN, None
  found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.S)
  return CHATML, (found.group(1) if found and "loop.first" in text else None)


def chat_template_jinja(tokenizer: "Tokenizer") -> str | None:
  """The Hugging Face (Jinja) form of the tokenizer's chat template, for export."""
  if tokenizer.chat_template != CHATML:
    return None
  system = ""
  if tokenizer.default_system is not None:
    system = ("{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
              + tokenizer.default_system.replace("'", "\\'") + "<|im_end|>\n' }}{% endif %}")
  return ("{% for message in messages %}" + system + "{{'<|im_start|>' + message['role'] + '\n'"
          " + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def check_fits(tokenizer: Tokenizer, vocab_size: int, where: str) -> None:
  """A checkpoint's tokenizer must not produce ids beyond its model's embedding rows."""
  if tokenizer.vocab_size > vocab_size:
    raise ValueError(f"{where}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                     f"embedding has only {vocab_size} rows (tokenizer/vocab mismatch).")


PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"


def char_tokenizer(alphabet: str) -> Tokenizer:
  """A character-level tokenizer: one token per character of `alphabet`, plus pad/bos/eos/unk.

  Built as a merge-free BPE so that it is a real `tokenizers` object that saves and loads
  like any other. Characters outside the alphabet raise (via `unk_id`), never vanish.
  """
  vocab = {PAD: 0, BOS: 1, EOS: 2, UNK: 3}
  for c in sorted(set(alphabet)):
    vocab[c] = len(vocab)
  backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token=UNK))
  backend.add_special_tokens([PAD, BOS, EOS, UNK])
  backend.decoder = tokenizers.decoders.Fuse()  # join characters without spaces
  return Tokenizer(backend, bos_id=1, eos_id=2, pad_id=0, unk_id=3, chat_template=PLAIN)
