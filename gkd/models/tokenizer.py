"""Tokenizers: one wrapper around a `tokenizers.Tokenizer` with special ids and a chat template.

Every tokenizer in gkd (SmolLM2's BPE rebuilt from GGUF metadata, a Hugging Face
tokenizer.json, or the small character-level one of the CPU testbed) is this class,
so the data pipeline, the sampler and the trainer see one interface.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import tokenizers

CHATML = "chatml"  # <|im_start|>role\ncontent<|im_end|>\n  (SmolLM2, Qwen2)
PLAIN = "plain"  # "role: content\n" lines, for tokenizers without chat special tokens


@dataclasses.dataclass
class Tokenizer:
  """A BPE (or char-level) tokenizer with the ids the rest of gkd needs.

  `pad_id` may equal `eos_id`: masks are never derived from pad ids (see DESIGN.md).
  """

  backend: tokenizers.Tokenizer
  bos_id: int | None
  eos_id: int
  pad_id: int
  chat_template: str = PLAIN
  unk_id: int | None = None  # if set, text that encodes to it is an error, not silently mangled

  def __post_init__(self):
    n = self.vocab_size
    for name in ("bos_id", "eos_id", "pad_id", "unk_id"):
      value = getattr(self, name)
      if value is not None and not 0 <= value < n:
        raise ValueError(f"Tokenizer {name}={value} is outside the vocabulary of size {n}.")
    if self.chat_template not in (CHATML, PLAIN):
      raise ValueError(f"Unknown chat template {self.chat_template!r}; use {CHATML!r} or {PLAIN!r}.")

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    encoding = self.backend.encode(text, add_special_tokens=False)
    ids = encoding.ids
    if self.unk_id is not None and self.unk_id in ids:
      unknown = sorted({text[a:b] for (a, b), i in zip(encoding.offsets, ids) if i == self.unk_id})
      raise ValueError(f"Text has characters outside the tokenizer's vocabulary: {unknown!r}")
    if add_bos and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> str:
    """Formats [{"role": ..., "content": ...}] as a prompt string."""
    if self.chat_template == CHATML:
      text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
      return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")

  # -- persistence: tokenizer.json plus a small sidecar with the special ids ------------------
  def save(self, path_prefix: str) -> None:
    self.backend.save(f"{path_prefix}.json")
    meta = {"bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id,
            "chat_template": self.chat_template, "unk_id": self.unk_id}
    with open(f"{path_prefix}.meta.json", "w") as f:
      json.dump(meta, f)

  @classmethod
  def load(cls, path_prefix: str) -> "Tokenizer":
    with open(f"{path_prefix}.meta.json") as f:
      meta = json.load(f)
    return cls(tokenizers.Tokenizer.from_file(f"{path_prefix}.json"), **meta)


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
