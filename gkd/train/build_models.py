"""Builds the tokenizer, teacher and student a config asks for (see `model_config` in defaults)."""

import dataclasses

from flax import nnx

from gkd import models
from gkd.data.tasks import testbed_tokenizer
from gkd.models import llama
from gkd.train.validate import check_vocab


def _llama_config(cfg, vocab_size: int) -> llama.LlamaConfig:
  base = dataclasses.asdict(llama.PRESETS[cfg.preset]) if cfg.preset else {}
  fields = {**base, **cfg.llama.to_dict(), "vocab_size": vocab_size}
  fields.setdefault("dtype", cfg.dtype)
  return llama.LlamaConfig(**fields)


def _load(cfg, *, seed: int, vocab_size: int | None, teacher=None):
  """(model, tokenizer or None) for one model config."""
  if cfg.source == "gguf":
    return models.load_gguf(cfg.path or None, dtype=cfg.dtype)
  if cfg.source == "pretrained":
    return models.load_pretrained(cfg.path, dtype=cfg.dtype)
  if cfg.source == "derive":
    layers = list(cfg.derive_layers) or None
    return llama.derive_student(teacher, layers=layers, every_k=cfg.derive_every_k or None,
                                rngs=nnx.Rngs(seed)), None
  return llama.Llama(_llama_config(cfg, vocab_size), rngs=nnx.Rngs(seed)), None


def build_models(config):
  """Returns (tokenizer, teacher or None, student). The teacher's tokenizer wins when it has one."""
  tokenizer, teacher = None, None
  if config.tokenizer == "testbed":
    tokenizer = testbed_tokenizer()
  if config.mode == "gkd":
    teacher, own = _load(config.teacher, seed=config.seed + 1,
                         vocab_size=tokenizer.vocab_size if tokenizer else None)
    tokenizer = tokenizer or own
  vocab = teacher.config.vocab_size if teacher is not None else (tokenizer.vocab_size if tokenizer else None)
  student, own = _load(config.student, seed=config.seed, vocab_size=vocab, teacher=teacher)
  tokenizer = tokenizer or own
  if tokenizer is None:
    raise ValueError("No tokenizer: set tokenizer='testbed' or load a model that ships one.")
  check_vocab(teacher.config.vocab_size if teacher is not None else student.config.vocab_size,
              student.config.vocab_size, tokenizer.vocab_size)
  return tokenizer, teacher, student
