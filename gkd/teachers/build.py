"""Builds the tokenizer, teacher and student a config asks for (see `model_config` in defaults).

Mixed precision: `dtype` is the compute dtype of a model's forward (and backward) pass;
`param_dtype` is how its weights are stored. The student is trained, so its weights (and
with them the optimizer state, which optax builds in the parameters' dtype) stay float32
unless `student.param_dtype` says otherwise: bf16 compute with float32 master weights. The
teacher is only read, so by default it is stored in its compute dtype (a bf16 teacher takes
half the memory). Logits, the loss and the divergences are float32 in every case.
"""

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
from flax import nnx

from gkd import models
from gkd.data.tasks import testbed_tokenizer
from gkd.errors import ConfigError
from gkd.models import llama


MODEL_SOURCES = ("init", "gguf", "pretrained", "derive")  # where a model's weights come from


class Built(NamedTuple):
  """A run's models: the data's tokenizer, the teacher's own (None when it is the same or there
  is none), the teacher models (none when no teacher model runs) and the student."""

  tokenizer: object
  teacher_tokenizer: object
  teachers: list
  student: nnx.Module


def teacher_configs(config) -> list:
  """The run's teacher model configs: `config.teachers`, or [`config.teacher`] when it is empty."""
  listed = list(config.get("teachers", None) or [])
  return listed or [config.teacher]


def build(config) -> Built:
  """Every model the config asks for (see `build_all` and `build_other_teachers`)."""
  tokenizer, teacher_tokenizer, teacher, student = build_all(config)
  teachers = [] if teacher is None else [teacher, *build_other_teachers(config, teacher)]
  return Built(tokenizer, teacher_tokenizer, teachers, student)


def _check(ok: bool, message: str):
  if not ok:
    raise ConfigError(message)


def dtypes(cfg, role: str) -> dict:
  """{"dtype", "param_dtype"} of one model config: the student's weights default to float32."""
  default_storage = "float32" if role == "student" else cfg.dtype
  return {"dtype": cfg.dtype, "param_dtype": cfg.param_dtype or default_storage}


def llama_config(cfg, vocab_size: int | None, role: str) -> llama.LlamaConfig:
  """The LlamaConfig of a source="init" model: preset, then `llama` fields, then the
  tokenizer's vocabulary size (when there is a tokenizer yet; else the preset's)."""
  base = dataclasses.asdict(llama.PRESETS[cfg.preset]) if cfg.preset else {}
  vocab = {"vocab_size": vocab_size} if vocab_size is not None else {}
  return llama.LlamaConfig(**{**base, **dtypes(cfg, role), **cfg.llama.to_dict(), **vocab})


def _with_dtypes(model: llama.Llama, dtype: str, param_dtype: str) -> llama.Llama:
  """`model` rebuilt with other compute/storage dtypes (its weights cast, not re-initialized)."""
  if (model.config.dtype, model.config.param_dtype) == (dtype, param_dtype):
    return model
  flat = {k: jnp.asarray(v, llama.DTYPES[param_dtype]) for k, v in llama.flat_params(model).items()}
  return llama.from_flat_params(model.config.replace(dtype=dtype, param_dtype=param_dtype), flat)


def _load(cfg, role: str, *, seed: int, vocab_size: int | None, teacher=None):
  """(model, tokenizer or None) for one model config."""
  kinds = dtypes(cfg, role)
  if cfg.source == "gguf":
    return models.load_gguf(cfg.path or None, **kinds)
  if cfg.source == "pretrained":
    return models.load_pretrained(cfg.path, **kinds)
  if cfg.source == "derive":  # the copy starts in the teacher's dtypes; the student has its own
    layers = list(cfg.derive_layers) or None
    student = llama.derive_student(teacher, layers=layers, every_k=cfg.derive_every_k or None,
                                   rngs=nnx.Rngs(seed))
    return _with_dtypes(student, **kinds), None
  return llama.Llama(llama_config(cfg, vocab_size, role), rngs=nnx.Rngs(seed)), None


def build_models(config):
  """Returns (tokenizer, teacher or None, student); see `build_all`."""
  tokenizer, _, teacher, student = build_all(config)
  return tokenizer, teacher, student


def build_all(config):
  """Returns (tokenizer, the teacher's own tokenizer or None, teacher or None, student).

  The run's tokenizer is `tokenizer='testbed'`, else the teacher's own when it has one, else
  the student's. Under objective.cross_tokenizer='uld' the teacher keeps its own tokenizer and
  vocabulary, and the run's (the data's) is the student's: 'testbed' or the student's own.
  """
  uld = config.mode == "gkd" and config.objective.get("cross_tokenizer", "") == "uld"
  tokenizer, teacher, teacher_tokenizer = None, None, None
  if config.tokenizer == "testbed":
    tokenizer = testbed_tokenizer()
  runs_teacher = config.mode == "gkd" and not config.get("teacher_store", "")  # a store replaces it
  # A derived student is cut from the teacher's layers, so even SFT of one loads the teacher.
  if runs_teacher or config.student.source == "derive":
    teacher, teacher_tokenizer = _load(teacher_configs(config)[0], "teacher",
                                       seed=config.seed + 1,
                                       vocab_size=tokenizer.vocab_size if tokenizer else None)
    if not uld:
      tokenizer = tokenizer or teacher_tokenizer
  shared = teacher is not None and not uld  # one vocabulary for teacher and student
  vocab = teacher.config.vocab_size if shared else (tokenizer.vocab_size if tokenizer else None)
  student, own = _load(config.student, "student", seed=config.seed, vocab_size=vocab, teacher=teacher)
  if not runs_teacher:
    teacher, teacher_tokenizer, shared = None, None, False
  tokenizer = tokenizer or own
  if tokenizer is None:
    raise ValueError("No tokenizer: set tokenizer='testbed' or load a model that ships one.")
  check_vocab(teacher.config.vocab_size if shared else student.config.vocab_size,
              student.config.vocab_size, tokenizer.vocab_size)
  check_same_tokenizer(tokenizer, {"student": own, "teacher": teacher_tokenizer if shared else None})
  return tokenizer, teacher_tokenizer, teacher, student


def build_other_teachers(config, first) -> list:
  """The teachers after the first in `config.teachers` (none for a single teacher), built on
  the first one's vocabulary; teacher k takes seed `config.seed + 1 + k`."""
  others = []
  for k, cfg in enumerate(teacher_configs(config)[1:], start=1):
    model, _ = _load(cfg, "teacher", seed=config.seed + 1 + k, vocab_size=first.config.vocab_size)
    if model.config.vocab_size != first.config.vocab_size:
      raise ValueError(f"teachers[{k}] has vocab_size={model.config.vocab_size}, teachers[0] "
                       f"{first.config.vocab_size}: several teachers need one shared vocabulary.")
    others.append(model)
  return others


def check_vocab(teacher_vocab: int, student_vocab: int, tokenizer_vocab: int) -> None:
  """Teacher and student must share a vocabulary; the tokenizer must fit inside it."""
  _check(teacher_vocab == student_vocab,
         f"student vocab_size={student_vocab} differs from the teacher's {teacher_vocab}; the "
         "token-level divergence needs one shared vocabulary (for a teacher with another "
         "tokenizer, set objective.cross_tokenizer='uld').")
  _check(tokenizer_vocab <= student_vocab,
         f"the tokenizer has {tokenizer_vocab} tokens but the models only {student_vocab}.")


def check_same_tokenizer(tokenizer, shipped: dict) -> None:
  """Each model's own tokenizer ({role: Tokenizer or None}) must be the run's, token for token:
  two vocabularies of one size can still number their tokens differently."""
  vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
  for role, own in shipped.items():
    _check(own is None or own.backend.get_vocab(with_added_tokens=True) == vocab,
           f"the {role}'s own tokenizer differs from the run's; the token-level divergence needs "
           "one shared vocabulary (for a teacher with another tokenizer, set "
           "objective.cross_tokenizer='uld').")
