"""The offline teacher store's format, its reader, and the train step's stand-in for a teacher.

A store (written by `python -m gkd.teacher_store`, or imported by `python -m gkd.blackbox`)
holds, per sample key (example_id × n + sample index, as the in-memory teacher cache keys them),
one response and, at each response position, the teacher's top-k log-probs and token ids. A run
reads it with `config.teacher_store=DIR` instead of building a teacher: the `Stored` teacher
looks each batch's rows up (`TeacherStore.lookup`) and turns them into the loss (the top-k
divergence of gkd.divergences; with k = 0, a response-only import, the hard CE alone:
objective.alpha=0).

Layout: DIR/store.json (what was stored and for which data: checked against the run's config)
and DIR/shard-NNNNN.array_record with its keys (and its size in bytes) in
DIR/shard-NNNNN.keys.json. A shard is written under a temporary name and renamed, and its keys
file is renamed last and marks it complete, so a killed writer resumes at the first missing
shard and an existing shard is never rewritten. Opening a store checks every shard (keys file,
size, record count); a damaged one fails naming the shard, and the writers' `--repair`
rewrites the damaged shards only.
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
from gkd.errors import StoreError
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
  """Writes one shard (records sorted by key) and its key index, atomically: the keys file,
  which also records the shard's size, is renamed last and marks the shard complete."""
  records = sorted(records)
  path = os.path.join(out, shard_name(index))
  writer = array_record_module.ArrayRecordWriter(path + ".array_record.tmp", "group_size:1")
  for _, blob in records:
    writer.write(blob)
  writer.close()
  os.replace(path + ".array_record.tmp", path + ".array_record")
  rundir.atomic_write(path + ".keys.json", json.dumps(
      {"keys": [k for k, _ in records], "bytes": os.path.getsize(path + ".array_record")}))


def done_shards(out: str) -> set[int]:
  return {int(os.path.basename(p)[6:11]) for p in glob.glob(os.path.join(out, "shard-*.keys.json"))}


def _shards(out: str) -> set[int]:
  """Every shard index that has a file in `out` (complete or not)."""
  names = glob.glob(os.path.join(out, "shard-*.keys.json")) + \
      glob.glob(os.path.join(out, "shard-*.array_record"))
  return {int(os.path.basename(p)[6:11]) for p in names}


def read_keys(out: str, index: int) -> tuple[list[int], int | None]:
  """(keys, the shard's size in bytes as written, or None for a store written before sizes
  were recorded) from a shard's keys file; StoreError when it cannot be read."""
  path = os.path.join(out, shard_name(index) + ".keys.json")
  try:
    with open(path) as f:
      index_ = json.load(f)
  except (OSError, ValueError) as e:
    raise StoreError(f"{path} is unreadable ({e})") from None
  if isinstance(index_, list):  # written before sizes were recorded
    index_ = {"keys": index_}
  keys, size = index_.get("keys"), index_.get("bytes")
  if not isinstance(keys, list) or not all(isinstance(k, int) for k in keys):
    raise StoreError(f"{path} does not hold a list of integer keys")
  return keys, size


def shard_problems(out: str, *, full: bool = False) -> dict[int, tuple[str, bool]]:
  """{shard index: (what is wrong, whether its keys file says it is complete)} for the store
  in `out`. Cheap checks (the keys file, the size, the array_record footer's record count);
  `full` also reads every record back (their chunk hashes)."""
  problems = {}
  for i in sorted(_shards(out)):
    base = os.path.join(out, shard_name(i))
    if not os.path.exists(base + ".keys.json"):
      problems[i] = ("has no keys file (its writing was cut short, or the file was removed)", False)
      continue
    try:
      keys, size = read_keys(out, i)
      if not os.path.exists(base + ".array_record"):
        raise StoreError("its .array_record file is missing")
      actual = os.path.getsize(base + ".array_record")
      if size is not None and actual != size:
        raise StoreError(f"its .array_record file has {actual} bytes, written as {size}")
      reader = array_record_module.ArrayRecordReader(base + ".array_record",
                                                     "readahead_buffer_size:0")
      try:
        if reader.num_records() != len(keys):
          raise StoreError(f"it holds {reader.num_records()} records; its keys file lists "
                           f"{len(keys)}")
        for start in range(0, len(keys) if full else 0, 256):
          reader.read(list(range(start, min(start + 256, len(keys)))))
      finally:
        reader.close()
    except StoreError as e:
      problems[i] = (str(e), True)
    except Exception as e:  # noqa: BLE001 — array_record's own errors: a damaged file
      problems[i] = (f"its .array_record file is damaged ({type(e).__name__}: "
                     f"{(str(e).strip().splitlines() or [''])[0][:160]})", True)
  return problems


def remove_shard(out: str, index: int) -> None:
  """Deletes a shard's files (its keys file first: a shard without one is not complete)."""
  for suffix in (".keys.json", ".array_record"):
    path = os.path.join(out, shard_name(index) + suffix)
    if os.path.exists(path):
      os.remove(path)


def rewrite_command(out: str, kind: str) -> str:
  """The command that rewrites a store's damaged shards."""
  if kind == "import":
    return f"python -m gkd.blackbox --config=... --jsonl=... --out={out} --repair"
  return f"python -m gkd.teacher_store --config=... --out={out} --kind={kind} --repair"


def check_shards(out: str, kind: str, *, repair: bool) -> None:
  """Before a writer goes on: with `repair`, removes every shard that does not read back in
  full (the writer then rewrites it); without, a damaged complete shard is a StoreError."""
  problems = shard_problems(out, full=repair)
  if repair:
    for i, (what, _) in problems.items():
      remove_shard(out, i)
      print(f"{out}: {shard_name(i)} {what}; removed, to be written again", flush=True)
    return
  damaged = {i: what for i, (what, complete) in problems.items() if complete}
  if damaged:
    i, what = next(iter(damaged.items()))
    raise StoreError(f"{out}: {shard_name(i)} {what}; rerun with --repair to rewrite the "
                     f"damaged shard(s) ({len(damaged)}): `{rewrite_command(out, kind)}`.")


def write_meta(out: str, meta: dict) -> None:
  """Creates DIR/store.json, or checks that a resumed writer stores the same thing."""
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, META)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != meta:
      raise StoreError(f"{out} holds a different store ({path}: {old}); this one would be "
                       f"{meta}. Use another --out.")
    return
  rundir.atomic_write(path, json.dumps(meta, indent=2, sort_keys=True))


class TeacherStore:
  """Reads a store: `lookup(keys, prompts)` gives the rows a batch needs."""

  def __init__(self, path: str):
    """Opens the store in `path` after checking every shard (see `shard_problems`): a damaged
    or incomplete one is a StoreError naming it and the command that rewrites it."""
    meta_path = os.path.join(path, META)
    if not os.path.exists(meta_path):
      raise StoreError(f"teacher_store={path!r} has no {META}: write one with "
                       "`python -m gkd.teacher_store --config=... --out=DIR`.")
    try:
      with open(meta_path) as f:
        self.meta = json.load(f)
      self.path, self.kind, self.topk = path, self.meta["kind"], int(self.meta["topk"])
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise StoreError(f"teacher_store={path!r}: {META} is unreadable ({e}); write the store "
                       "again into a new directory.") from None
    problems = shard_problems(path)
    if problems:
      i, (what, _) = next(iter(problems.items()))
      more = f" (and {len(problems) - 1} more shard(s))" if len(problems) > 1 else ""
      raise StoreError(f"teacher_store={path!r}: {shard_name(i)} {what}{more}; rewrite the bad "
                       f"shards with `{rewrite_command(path, self.kind)}`.")
    self._readers, self._where = [], {}
    for i in sorted(done_shards(path)):
      keys, _ = read_keys(path, i)
      reader = array_record_module.ArrayRecordReader(
          os.path.join(path, shard_name(i) + ".array_record"), "readahead_buffer_size:0")
      self._where.update({k: (len(self._readers), j) for j, k in enumerate(keys)})
      self._readers.append((i, reader))

  def __len__(self):
    return len(self._where)

  def check(self, config, *, vocab_size: int) -> None:
    """Raises StoreError when the store cannot serve this run config (naming what differs)."""
    meta, obj = self.meta, config.objective
    want = data_fingerprint(config)
    where = f"teacher_store={self.path!r}"
    if meta["vocab_size"] != vocab_size:
      raise StoreError(f"{where} was written with a vocabulary of {meta['vocab_size']}; the "
                       f"student has {vocab_size}.")
    if meta["data"] != want:
      diff = {k: (meta["data"].get(k), v) for k, v in want.items() if meta["data"].get(k) != v}
      raise StoreError(f"{where} was written for other data; (store, run) differ in {diff}.")
    source = source_of(self.kind)
    if config.mix[source] != 1.0:
      raise StoreError(f"{where} holds {self.kind} responses, so it serves mix.{source}=1 only "
                       f"(the run has mix={dict(config.mix)}).")
    n = int(config.sampling.num_samples)
    if source == "teacher" and meta["samples_per_prompt"] != n:
      raise StoreError(f"{where} has {meta['samples_per_prompt']} responses per prompt; set "
                       f"sampling.num_samples={meta['samples_per_prompt']} (it is {n}).")
    if self.topk and not np.isclose(meta["temperature"], obj.temperature):
      raise StoreError(f"{where} holds top-k log-probs at temperature {meta['temperature']}; "
                       f"objective.temperature={obj.temperature} needs a store written at it.")
    if obj.teacher_topk not in (0, self.topk):
      raise StoreError(f"{where} holds the top {self.topk}; objective.teacher_topk="
                       f"{obj.teacher_topk} must be 0 or {self.topk}.")
    if not self.topk and obj.alpha != 0:
      raise StoreError(f"{where} holds responses without log-probs: only the hard CE can train "
                       f"on them; set objective.alpha=0 (it is {obj.alpha}).")
    examples = config.data.num_train_examples or meta["num_examples"]
    per = n if source == "teacher" else 1
    missing = [e for e in range(examples) if e * per not in self._where]
    if missing:
      raise StoreError(f"{where} lacks {len(missing)} of the run's {examples} training examples "
                       f"(the first: example {missing[0]}); finish writing it, or lower "
                       "data.num_train_examples to the examples it covers.")

  def read(self, key: int) -> dict:
    """One record: {"key", "prompt" (its hash), "tokens", "logprobs", "indices"}."""
    if key not in self._where:
      raise StoreError(f"teacher_store={self.path!r} has no record for key {key}.")
    shard, index = self._where[key]
    number, reader = self._readers[shard]
    try:
      return serialization.msgpack_restore(reader.read([index])[0])
    except Exception as e:  # noqa: BLE001 — damage past what opening checks (a chunk's hash)
      raise StoreError(f"teacher_store={self.path!r}: {shard_name(number)} is damaged (record "
                       f"{index}: {(str(e).strip().splitlines() or [''])[0][:160]}); rewrite "
                       f"the bad shards with `{rewrite_command(self.path, self.kind)}`.") from None

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
        raise StoreError(f"teacher_store={self.path!r}: the stored prompt of key {key} differs "
                         "from this run's tokenization of it (another tokenizer or chat "
                         "template?).")
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
