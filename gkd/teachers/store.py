"""The offline teacher store's format, its reader, and the train step's stand-in for a teacher.

A store (written by `python -m gkd.teacher_store`, or imported by `python -m gkd.blackbox`)
holds, per sample key (example_id × n + sample index, as the in-memory teacher cache keys them),
one response and, at each response position, the teacher's top-k log-probs and token ids. A run
reads it with `config.teacher_store=DIR` instead of building a teacher: the `Stored` teacher
looks each batch's rows up (`TeacherStore.lookup`) and turns them into the loss (the top-k
divergence of gkd.divergences; with k = 0, a response-only import, the hard CE alone:
objective.alpha=0).

Layout: DIR/store.json (what was stored and for which data: checked against the run's config)
and DIR/shard-NNNNN.array_record with its keys in DIR/shard-NNNNN.keys.json. A shard is written
under a temporary name and renamed, and its keys file is renamed last and marks it complete, so
a killed writer resumes at the first missing shard and an existing shard is never rewritten.
Records keep only a response's masked prefix (the mask is a prefix: tokens up to and including
EOS), as msgpack: a hash of the prompt's real tokens (checked at lookup, so a store cannot
silently serve another tokenization), the response tokens, log-probs f32[L, k] and ids [L, k]
(uint16 when the vocabulary fits, else int32).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os

import numpy as np
from array_record.python import array_record_module
from flax import serialization

from gkd import objectives, rundir, sharding
from gkd.data.pipeline import task_kwargs
from gkd.teachers.base import StudentView, Teacher
from gkd.teachers.labels import hard_ce_terms

FORMAT = 1
KINDS = ("dataset", "teacher", "import")
META = "store.json"


def source_of(kind: str) -> str:
  """The batch source (a name in gkd.sources.SOURCES) a store of `kind` serves."""
  return "dataset" if kind == "dataset" else "teacher"


def data_fingerprint(config, split: str = "train") -> dict:
  """What a store's prompts and response lengths depend on: compared when a run opens it."""
  d = config.data
  return {"task": d.task, "task_kwargs": task_kwargs(config), "split": split,
          "max_prompt_len": int(d.max_prompt_len), "max_response_len": int(d.max_response_len),
          "chat_template": bool(d.chat_template), "truncation": d.get("truncation", "truncate")}


def shard_name(index: int) -> str:
  return f"shard-{index:05d}"


def prompt_hash(prompt_tokens) -> int:
  """A 64-bit fingerprint of a prompt's real tokens."""
  return int.from_bytes(hashlib.blake2b(np.asarray(prompt_tokens, np.int64).tobytes(),
                                        digest_size=8).digest(), "little")


def encode_record(key: int, prompt, tokens, logprobs, indices, vocab_size: int) -> bytes:
  ids = np.asarray(indices, np.uint16 if vocab_size <= 1 << 16 else np.int32)
  return serialization.msgpack_serialize({
      "key": int(key), "prompt": prompt_hash(prompt), "tokens": np.asarray(tokens, np.int32),
      "logprobs": np.asarray(logprobs, np.float32), "indices": ids})


def write_shard(out: str, index: int, records: list[tuple[int, bytes]]) -> None:
  """Writes one shard (records sorted by key) and its key index, atomically: the keys file is
  renamed last and marks the shard complete."""
  records = sorted(records)
  path = os.path.join(out, shard_name(index))
  writer = array_record_module.ArrayRecordWriter(path + ".array_record.tmp", "group_size:1")
  for _, blob in records:
    writer.write(blob)
  writer.close()
  os.replace(path + ".array_record.tmp", path + ".array_record")
  rundir.atomic_write(path + ".keys.json", json.dumps([k for k, _ in records]))


def done_shards(out: str) -> set[int]:
  return {int(os.path.basename(p)[6:11]) for p in glob.glob(os.path.join(out, "shard-*.keys.json"))}


def write_meta(out: str, meta: dict) -> None:
  """Creates DIR/store.json, or checks that a resumed writer stores the same thing."""
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, META)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != meta:
      raise ValueError(f"{out} holds a different store ({path}: {old}); this one would be "
                       f"{meta}. Use another --out.")
    return
  rundir.atomic_write(path, json.dumps(meta, indent=2, sort_keys=True))


class TeacherStore:
  """Reads a store: `lookup(keys, prompts)` gives the rows a batch needs."""

  def __init__(self, path: str):
    meta_path = os.path.join(path, META)
    if not os.path.exists(meta_path):
      raise ValueError(f"teacher_store={path!r} has no {META}: write one with "
                       "`python -m gkd.teachers.store_writer --config=... --out=DIR`.")
    with open(meta_path) as f:
      self.meta = json.load(f)
    self.path, self.kind, self.topk = path, self.meta["kind"], int(self.meta["topk"])
    self._readers, self._where = [], {}
    for i in sorted(done_shards(path)):
      with open(os.path.join(path, shard_name(i) + ".keys.json")) as f:
        keys = json.load(f)
      reader = array_record_module.ArrayRecordReader(
          os.path.join(path, shard_name(i) + ".array_record"), "readahead_buffer_size:0")
      self._where.update({k: (len(self._readers), j) for j, k in enumerate(keys)})
      self._readers.append(reader)

  def __len__(self):
    return len(self._where)

  def check(self, config, *, vocab_size: int) -> None:
    """Raises ValueError when the store cannot serve this run config (naming what differs)."""
    meta, obj = self.meta, config.objective
    want = data_fingerprint(config)
    where = f"teacher_store={self.path!r}"
    if meta["vocab_size"] != vocab_size:
      raise ValueError(f"{where} was written with a vocabulary of {meta['vocab_size']}; the "
                       f"student has {vocab_size}.")
    if meta["data"] != want:
      diff = {k: (meta["data"].get(k), v) for k, v in want.items() if meta["data"].get(k) != v}
      raise ValueError(f"{where} was written for other data; (store, run) differ in {diff}.")
    source = source_of(self.kind)
    if config.mix[source] != 1.0:
      raise ValueError(f"{where} holds {self.kind} responses, so it serves mix.{source}=1 only "
                       f"(the run has mix={dict(config.mix)}).")
    n = int(config.sampling.num_samples)
    if source == "teacher" and meta["samples_per_prompt"] != n:
      raise ValueError(f"{where} has {meta['samples_per_prompt']} responses per prompt; set "
                       f"sampling.num_samples={meta['samples_per_prompt']} (it is {n}).")
    if self.topk and not np.isclose(meta["temperature"], obj.temperature):
      raise ValueError(f"{where} holds top-k log-probs at temperature {meta['temperature']}; "
                       f"objective.temperature={obj.temperature} needs a store written at it.")
    if obj.teacher_topk not in (0, self.topk):
      raise ValueError(f"{where} holds the top {self.topk}; objective.teacher_topk="
                       f"{obj.teacher_topk} must be 0 or {self.topk}.")
    if not self.topk and obj.alpha != 0:
      raise ValueError(f"{where} holds responses without log-probs: only the hard CE can train "
                       f"on them; set objective.alpha=0 (it is {obj.alpha}).")
    examples = config.data.num_train_examples or meta["num_examples"]
    per = n if source == "teacher" else 1
    missing = [e for e in range(examples) if e * per not in self._where]
    if missing:
      raise ValueError(f"{where} lacks {len(missing)} of the run's {examples} training examples "
                       f"(the first: example {missing[0]}); finish writing it, or lower "
                       "data.num_train_examples to the examples it covers.")

  def read(self, key: int) -> dict:
    """One record: {"key", "prompt" (its hash), "tokens", "logprobs", "indices"}."""
    if key not in self._where:
      raise KeyError(f"teacher_store={self.path!r} has no record for key {key}.")
    shard, index = self._where[key]
    return serialization.msgpack_restore(self._readers[shard].read([index])[0])

  def lookup(self, keys, prompt_tokens, prompt_mask, response_len: int) -> dict:
    """Host arrays for the rows of `keys` (their prompts given to check them against): response_tokens/mask [B, R] and, with top-k, teacher_topk_logprobs
    f32[B, R, k] / teacher_topk_indices int32[B, R, k] (−inf / 0 past each response)."""
    b, k = len(keys), self.topk
    out = {"response_tokens": np.zeros((b, response_len), np.int32),
           "response_mask": np.zeros((b, response_len), bool)}
    if k:
      out["teacher_topk_logprobs"] = np.full((b, response_len, k), -np.inf, np.float32)
      out["teacher_topk_indices"] = np.zeros((b, response_len, k), np.int32)
    for row, key in enumerate(keys):
      rec = self.read(int(key))
      if rec["prompt"] != prompt_hash(np.asarray(prompt_tokens)[row][np.asarray(prompt_mask)[row]]):
        raise ValueError(f"teacher_store={self.path!r}: the stored prompt of key {key} differs from "
                         "this run's tokenization of it (another tokenizer or chat template?).")
      n = len(rec["tokens"])
      out["response_tokens"][row, :n] = rec["tokens"]
      out["response_mask"][row, :n] = True
      if k:
        out["teacher_topk_logprobs"][row, :n] = rec["logprobs"]
        out["teacher_topk_indices"][row, :n] = rec["indices"]
    return out


@dataclasses.dataclass(frozen=True)
class Stored(Teacher):
  """A store standing in for the teacher: its targets ride in the batch (`prepare`).

  With top-k the loss is `objectives.distillation_loss` on the stored (log-probs, ids) pair
  (past each response the log-probs are −inf: the top-k divergences stay finite there, and the
  mask drops them). Without (k = 0) it is the hard CE on the stored responses.
  """

  topk: int
  reader: TeacherStore | None = dataclasses.field(compare=False, repr=False, default=None)

  kind = "store"
  fixed_responses = True

  @classmethod
  def check(cls, config) -> list[str]:
    return check(config)

  @classmethod
  def build(cls, config, built, mesh):
    del mesh
    reader = TeacherStore(config.teacher_store)
    reader.check(config, vocab_size=built.student.config.vocab_size)
    return cls(reader.topk, reader), None

  def loss_terms(self, student: StudentView, params, batch, weight, objective):
    del params  # there is no teacher to run
    if not self.topk:
      return hard_ce_terms(student.logits(), batch, weight, objective)
    loss, aux = objectives.distillation_loss(
        student.logits(), (batch["teacher_topk_logprobs"], batch["teacher_topk_indices"]),
        batch["response_tokens"], batch["response_mask"], objective, weight=weight)
    return loss, {"loss": loss, "divergence": aux["divergence"], "hard_ce": aux["hard_ce"]}

  def _rows(self, batch: dict, keys) -> dict:
    """The stored rows of the global batch's keys (a dataset store is keyed by example id)."""
    ids = keys["example_id"] if self.reader.kind == "dataset" else keys["sample"]
    return self.reader.lookup(ids, sharding.fetch(batch["prompt_tokens"]),
                              sharding.fetch(batch["prompt_mask"]),
                              batch["response_tokens"].shape[1])

  def prepare(self, batch: dict, keys, mesh) -> dict:
    return sharding.place_rows(mesh, self._rows(batch, keys))

  def respond(self, params, batch: dict, keys, rng, *, sampler):
    del params, rng, sampler
    rows = self._rows(batch, keys)
    return rows["response_tokens"], rows["response_mask"]

  def describe(self) -> str:
    return f"the teacher store {self.reader.path}" if self.reader else "a teacher store"


def check(config) -> list[str]:
  """Problems with `config.teacher_store` that need no disk (messages naming the fields)."""
  if not config.get("teacher_store", ""):
    return []
  why, obj, mix = "teacher_store (a run without a teacher model)", config.objective, config.mix
  listed = list(config.get("teachers", None) or [])
  problems = [
      (config.mode != "gkd", f"{why} needs mode='gkd'."),
      (mix.student > 0, f"{why} cannot score on-policy samples (mix.student={mix.student}): "
       "those need a live teacher."),
      (mix.get("per_example", False), f"{why} takes one batch source; unset mix.per_example."),
      (len(listed) > 1, f"{why} stands for one teacher; config.teachers lists {len(listed)}."),
      (config.student.source == "derive", f"{why}: the student cannot derive from a teacher "
       "that is not loaded; set student.source."),
      (config.sampling.speculative_topk > 0, f"{why} cannot vet tokens: unset "
       "sampling.speculative_topk."),
  ] + [(bool(obj.get(k)), f"{why} does not combine with objective.{k}={obj.get(k)!r}.")
       for k in ("chunk_size", "hidden_loss", "layer_map", "cross_tokenizer")]
  return [message for bad, message in problems if bad]
