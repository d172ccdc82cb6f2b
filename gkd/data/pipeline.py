"""grain input pipelines over the prepared TFDS datasets: tokenized, padded, sharded batches.

Batch contract (NumPy, static shapes, B = batch_size per host):
  prompt_tokens      int32[B, P]  LEFT-padded with tokenizer.pad_id (BOS first if there is one)
  prompt_mask        bool[B, P]   True on real prompt tokens
  response_tokens    int32[B, R]  RIGHT-padded: the response tokens, then EOS
  response_mask      bool[B, R]   True on the response tokens and that EOS
  example_id         int64[B]     index of the example in its split; -1 on padding rows
  prompt_truncated   bool[B]      the prompt was cut (see the truncation policy)
  response_truncated bool[B]      the response was cut, so it has no EOS

Truncation policy (`truncation="truncate"`, the default): a prompt longer than P keeps its
BOS and its LAST P-1 tokens (the text next to the response survives); a response that
does not fit R with its EOS keeps its FIRST R tokens, has no EOS, and its mask covers all R.
Both are flagged per row (the training loop counts them). `truncation="error"` instead
checks every example of the split when the loader is made, before any batch, and raises
naming the first one too long. An empty (or blank) prompt always raises.

Chat template (`chat_template=True`): the prompt is rendered with the tokenizer's template,
as one user message, or as the example's own chat (its "messages" field: the files task
with a messages column or few-shot turns).

Order: the split's examples are shuffled with `seed` (a new permutation every epoch),
repeated `num_epochs` times (None: forever) and cut into global batches of
batch_size × shard_count; host `shard_index` takes its slice of each (disjoint and covering),
so the global batches do not depend on the number of hosts. With finite epochs the tail is
filled with padding rows (example_id -1, all masks False) so every host yields the same
number of full batches.

Resume: `it.get_state()` is a small JSON-serialisable dict; a new loader built with the same
arguments and given `set_state(state)` continues at the exact next example.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import grain
import numpy as np

from gkd.data import builders
from gkd.errors import ConfigError, DataError
from gkd.data import tasks as tasks_lib

TRUNCATION_POLICIES = ("truncate", "error")


class TaskIterator:
  """Iterator of batches (see the module docstring) with get_state/set_state."""

  def __init__(self, dataset: grain.MapDataset, fingerprint: dict, num_batches: int | None,
               num_threads: int):
    self._dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4 * num_threads))
    self._iter = iter(self._dataset)
    self._fingerprint = fingerprint
    self.num_examples = fingerprint["n"]  # examples per epoch (the split, capped)
    self.num_batches = num_batches  # None when repeating forever

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iter)

  def get_state(self) -> dict[str, Any]:
    return {"grain": self._iter.get_state(), "loader": dict(self._fingerprint)}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues where `state` (from `get_state`) left off. The state of another host of the
    same global batches serves too, also with another number of hosts: every host is then
    at the same global batch (grain's `next_index` counts them)."""
    saved = state.get("loader") or {}
    if _global(saved) != _global(self._fingerprint):
      raise ValueError("This state belongs to a different loader (task, split, seed, sizes or "
                       f"global batch differ): saved {saved}, this {self._fingerprint}.")
    self._iter.set_state(state["grain"])


_SHARDING = ("shard_index", "shard_count", "batch_size")


def _global(fingerprint: dict) -> dict:
  """A loader's fingerprint without what only one host's share of the global batch depends on."""
  out = {k: v for k, v in fingerprint.items() if k not in _SHARDING}
  out["global_batch"] = fingerprint.get("batch_size", 0) * fingerprint.get("shard_count", 1)
  return out


def encode_example(tokenizer, prompt: str, response: str, *, max_prompt_len: int,
                   max_response_len: int, chat_template: bool = False,
                   truncation: str = "truncate", example_id: int = -1,
                   messages: list[dict] | None = None, source: str = "") -> dict[str, np.ndarray]:
  """One padded row of the batch contract (without the batch axis).

  `messages` is the prompt as a chat, used instead of `prompt` under the chat template.
  `source` (e.g. "file.jsonl:7") is quoted in errors.
  """
  where = f"Example {example_id}" + (f" ({source})" if source else "")
  if not prompt.strip():
    raise DataError(f"{where} has an empty prompt.")
  prompt_ids = prompt_token_ids(tokenizer, prompt, chat_template=chat_template, messages=messages)
  response_ids = tokenizer.encode(response) + [tokenizer.eos_id]
  prompt_cut = len(prompt_ids) > max_prompt_len
  response_cut = len(response_ids) > max_response_len
  if prompt_cut and truncation == "error":
    raise DataError(f"{where}: field 'prompt' has {len(prompt_ids)} tokens, more than "
                    f"max_prompt_len={max_prompt_len}, and truncation='error'.")
  if response_cut and truncation == "error":
    raise DataError(f"{where}: field 'response' has {len(response_ids)} tokens with its EOS, "
                    f"more than max_response_len={max_response_len}, and truncation='error'.")
  if prompt_cut:
    has_bos = tokenizer.bos_id is not None
    head = prompt_ids[:1] if has_bos else []
    prompt_ids = head + prompt_ids[len(prompt_ids) - (max_prompt_len - len(head)):]
  if response_cut:
    response_ids = response_ids[:max_response_len]  # drops the EOS: no stop is taught here
  row = _empty_row(tokenizer.pad_id, max_prompt_len, max_response_len)
  if prompt_ids:
    row["prompt_tokens"][-len(prompt_ids):] = prompt_ids
    row["prompt_mask"][-len(prompt_ids):] = True
  row["response_tokens"][:len(response_ids)] = response_ids
  row["response_mask"][:len(response_ids)] = True
  row["example_id"] = np.int64(example_id)
  row["prompt_truncated"] = np.bool_(prompt_cut)
  row["response_truncated"] = np.bool_(response_cut)
  return row


def prompt_token_ids(tokenizer, prompt: str, *, chat_template: bool = False,
                     messages: list[dict] | None = None) -> list[int]:
  """The prompt's tokens as a batch row holds them before any cut: BOS first (if any), under
  the chat template when asked (as one user message, or as `messages`)."""
  if chat_template:
    prompt = tokenizer.apply_chat_template(messages or [{"role": "user", "content": prompt}])
  return tokenizer.encode(prompt, add_bos=True)


def _empty_row(pad_id: int, p: int, r: int) -> dict[str, np.ndarray]:
  return {
      "prompt_tokens": np.full((p,), pad_id, np.int32),
      "prompt_mask": np.zeros((p,), bool),
      "response_tokens": np.full((r,), pad_id, np.int32),
      "response_mask": np.zeros((r,), bool),
      "example_id": np.int64(-1),
      "prompt_truncated": np.bool_(False),
      "response_truncated": np.bool_(False),
  }


def make_loader(*, task: str, tokenizer, split: str, batch_size: int, max_prompt_len: int,
                max_response_len: int, seed: int, shuffle: bool = True,
                num_epochs: int | None = None, chat_template: bool = False, shard_index: int = 0,
                shard_count: int = 1, data_dir: str | None = None,
                num_examples: int | None = None, task_kwargs: dict | None = None,
                truncation: str = "truncate", num_threads: int = 2) -> TaskIterator:
  """Batches of `task`/`split` for training or evaluation; see the module docstring.

  `seed` orders the examples; the task's own data seed and split sizes go in `task_kwargs`
  (e.g. {"seed": 0, "num_train": 1000}). `num_examples` caps the split (its first examples).
  """
  task_obj = tasks_lib.get_task(task)
  task_kwargs = dict(task_kwargs or {})
  task_obj.params(**task_kwargs)  # unknown parameter names fail here, before any work
  _check_args(batch_size=batch_size, max_prompt_len=max_prompt_len,
              max_response_len=max_response_len, shard_index=shard_index,
              shard_count=shard_count, num_epochs=num_epochs, num_examples=num_examples,
              truncation=truncation, tokenizer=tokenizer)
  dataset = builders.prepare(task, data_dir, **task_kwargs)
  source = builders.load_split(task, split, data_dir, **task_kwargs)
  n = len(source) if num_examples is None else min(num_examples, len(source))
  if n < shard_count:
    raise DataError(f"{task}/{split} has {n} examples, fewer than the {shard_count} processes.")

  # One global order (shuffled, repeated, cut into global batches of batch_size × shard_count);
  # each host takes its slice of every global batch. The global batches are thus the same
  # whatever the number of hosts, so a multi-host run trains on what a single host would.
  ids = grain.MapDataset.range(n)
  if shuffle:
    ids = ids.shuffle(seed=seed)
  ids = ids.repeat(num_epochs)
  global_batch = batch_size * shard_count
  num_batches = None
  if num_epochs is not None:  # pad the tail to a full global batch: every host runs as long
    num_batches = math.ceil(len(ids) / global_batch)
    padding = num_batches * global_batch - len(ids)
    if padding:
      ids = grain.MapDataset.concatenate([ids, grain.MapDataset.source([-1] * padding)])
  if shard_count > 1:
    mine = ids.batch(global_batch, drop_remainder=True).map(
        lambda b: b[shard_index * batch_size:(shard_index + 1) * batch_size])
    ids = grain.MapDataset.range(len(mine) * batch_size).map(
        lambda k: int(mine[k // batch_size][k % batch_size]))

  pad_row = _empty_row(tokenizer.pad_id, max_prompt_len, max_response_len)

  def encode(i):
    record = builders.decode_record(source[i])
    try:
      return encode_example(tokenizer, record["prompt"], record["response"],
                            max_prompt_len=max_prompt_len, max_response_len=max_response_len,
                            chat_template=chat_template, truncation=truncation, example_id=i,
                            messages=json.loads(record["messages"]) if record["messages"] else None,
                            source=record["source"])
    except DataError as e:
      raise DataError(f"{task}/{split}: {e}") from e

  if truncation == "error":  # fail now, before training, not at the batch that holds it
    for i in range(n):
      encode(i)

  def featurize(i):
    i = int(i)
    if i < 0:
      return {k: np.copy(v) for k, v in pad_row.items()}
    return encode(i)

  batches = ids.map(featurize).batch(batch_size, drop_remainder=True)
  # The dataset's name holds a hash of its parameters and of the files it read: a run does
  # not resume onto data that changed under it.
  dataset_name = os.path.relpath(dataset, os.path.dirname(os.path.dirname(dataset)))
  fingerprint = dict(task=task, dataset=dataset_name, split=split, task_kwargs=task_kwargs, n=n,
                     seed=seed, shuffle=shuffle, num_epochs=num_epochs, batch_size=batch_size,
                     shard_index=shard_index, shard_count=shard_count)
  return TaskIterator(batches, fingerprint, num_batches, num_threads)


def _check_args(*, batch_size, max_prompt_len, max_response_len, shard_index, shard_count,
                num_epochs, num_examples, truncation, tokenizer):
  min_prompt = 2 if tokenizer.bos_id is not None else 1  # room for BOS and one real token
  if batch_size < 1:
    raise ConfigError(f"batch_size={batch_size} must be >= 1")
  if max_prompt_len < min_prompt or max_response_len < 1:
    raise ConfigError(f"max_prompt_len={max_prompt_len} must be >= {min_prompt} and "
                     f"max_response_len={max_response_len} >= 1")
  if not 0 <= shard_index < shard_count:
    raise ConfigError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  if num_epochs is not None and num_epochs < 1:
    raise ConfigError(f"num_epochs={num_epochs} must be >= 1, or None to repeat forever")
  if num_examples is not None and num_examples < 1:
    raise ConfigError(f"num_examples={num_examples} must be >= 1")
  if truncation not in TRUNCATION_POLICIES:
    raise ConfigError(f"truncation={truncation!r}; use one of {TRUNCATION_POLICIES}")


def make_eval_examples(task: str, split: str, n: int | None, data_dir: str | None = None,
                       **task_kwargs) -> list[dict]:
  """The first `n` (all if None) raw examples of a prepared split, each with its example_id."""
  source = builders.load_split(task, split, data_dir, **task_kwargs)
  count = len(source) if n is None else min(n, len(source))
  return [builders.decode_record(source[i]) for i in range(count)]


def task_kwargs(config) -> dict:
  """`config.data.task_kwargs` as a plain dict; absent or empty means the task's defaults."""
  kwargs = config.data.get("task_kwargs")
  if not kwargs:
    return {}
  return kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs)


def loader_for_config(config, tokenizer, *, split: str, batch_size: int, shuffle: bool,
                      num_epochs: int | None, num_examples: int | None) -> TaskIterator:
  """`make_loader` for a gkd run config: `batch_size` is global, split over the hosts.

  Reads data.task, data.task_kwargs, data.max_prompt_len, data.max_response_len,
  data.chat_template, data.data_dir, data.truncation ("truncate" when absent) and seed.
  """
  import jax

  return make_loader(
      task=config.data.task, tokenizer=tokenizer, split=split,
      batch_size=batch_size // jax.process_count(), max_prompt_len=config.data.max_prompt_len,
      max_response_len=config.data.max_response_len, seed=config.seed, shuffle=shuffle,
      num_epochs=num_epochs, chat_template=config.data.chat_template,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      data_dir=config.data.data_dir or None, num_examples=num_examples or None,
      task_kwargs=task_kwargs(config), truncation=config.data.get("truncation", "truncate"))


def check_data(config, tokenizer, *, sample: int = 256) -> None:
  """Checks of the run's data against its lengths, before training, that the loaders do not
  make: with data.truncation="error", every example of the validation and test splits must
  fit as the train loader checks its split (a DataError names the file and line); with
  "truncate", the lengths must not cut every prompt (the first `sample` training prompts)."""
  d = config.data
  lengths = dict(max_prompt_len=d.max_prompt_len, max_response_len=d.max_response_len,
                 chat_template=d.chat_template)
  if d.get("truncation", "truncate") == "error":
    for split in ("validation", "test"):
      for record in eval_examples_for_config(config, split, None):
        try:
          encode_example(tokenizer, record["prompt"], record["response"], truncation="error",
                         example_id=record["example_id"], source=record["source"],
                         messages=json.loads(record["messages"]) if record["messages"] else None,
                         **lengths)
        except DataError as e:
          raise DataError(f"{d.task}/{split}: {e}") from None
    return
  records = eval_examples_for_config(config, "train", min(d.num_train_examples or sample, sample))
  lengths = [len(prompt_token_ids(tokenizer, r["prompt"], chat_template=d.chat_template,
                                  messages=json.loads(r["messages"]) if r["messages"] else None))
             for r in records]
  shortest = min(lengths, default=0)
  if shortest > d.max_prompt_len:
    raise ConfigError(f"data.max_prompt_len={d.max_prompt_len} cuts every prompt: the shortest "
                      f"of the first {len(records)} training prompts has {shortest} tokens (BOS "
                      f"and chat template included). Raise it to at least {shortest}.")


def eval_examples_for_config(config, split: str, n: int | None) -> list[dict]:
  """`make_eval_examples` for a gkd run config (its task, task_kwargs and data_dir)."""
  return make_eval_examples(config.data.task, split, n, data_dir=config.data.data_dir or None,
                            **task_kwargs(config))
