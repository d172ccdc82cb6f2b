"""The `files` task: a researcher's own data, from local files, set up in `data.task_kwargs`.

Parameters (`DEFAULTS`; every one settable as --config.data.task_kwargs.NAME=...):
  path              the data: one file (JSONL, CSV, Parquet), a saved Hugging Face dataset
                    directory, or a prepared TFDS directory (see gkd.data.readers). A directory
                    may hold splits named train / validation / test.
  train_path, validation_path, test_path
                    one file per split instead of `path` (set `path` or `train_path`, not both).
                    `validation_path` / `test_path` also override those splits of `path`.
  format            "auto" (from the extension or the directory's metadata), "jsonl", "csv",
                    "parquet", "hf" or "tfds".
  prompt_field, response_field
                    the columns holding the prompt and the reference response.
  prompt_template   how a prompt column is shown to the model: "{prompt}" is replaced by the
                    value, e.g. "Question: {prompt}\nAnswer: ". The response follows it directly
                    (in training, in generation and in few-shot exemplars).
  messages_field    instead: a column holding a chat as a list of {"role", "content"}. The
                    last assistant message is the response; the messages before it are the
                    prompt (rendered with the tokenizer's chat template when
                    data.chat_template is on, else as "role: content" lines).
  answer_field      the column holding the final answer (numeric and exact graders); empty:
                    the numeric grader extracts it from the response, exact uses the response.
  grader            "numeric", "exact", "rouge", "bleu" or "none" (gkd.data.graders).
  validation_size, test_size
                    a split without its own file or directory entry is carved out of train:
                    a fraction (< 1) or a count (>= 1) of the train rows, drawn by `seed`.
  seed              seeds the carving and the few-shot draw.
  num_fewshot       k > 0 prepends k exemplars (templated prompt + response) to every prompt,
                    as the GKD paper's few-shot GSM8K prompts. They are drawn once by `seed`
                    from the train split and then removed from it, so no training target
                    appears in its own prompt. With a chat, they become earlier user/assistant
                    turns.
  fewshot_separator the text between exemplars (and before the prompt) without a chat.

Every bad value fails while the dataset is prepared, before any training step, naming the
file, the line (or row) and the field.
"""

from __future__ import annotations

import functools
import json
import logging
import os

import numpy as np

from gkd.data import graders, readers, splits
from gkd.errors import DataError

_log = logging.getLogger(__name__)

DEFAULTS = (
    ("path", ""), ("train_path", ""), ("validation_path", ""), ("test_path", ""),
    ("format", "auto"), ("prompt_field", "prompt"), ("response_field", "response"),
    ("prompt_template", "{prompt}"),
    ("messages_field", ""), ("answer_field", ""), ("grader", "none"),
    ("validation_size", 0.1), ("test_size", 0.1), ("seed", 0),
    ("num_fewshot", 0), ("fewshot_separator", "\n\n"),
)


def render_plain(messages: list[dict]) -> str:
  """A chat prompt as text without a chat template: "role: content" lines, then "assistant: "."""
  return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def fingerprint(params: dict) -> str:
  """Size and modification time of every file the parameters read: prepared data is rebuilt
  when a file changes, although the parameters (its path) do not."""
  stamps = []
  for key in ("path", "train_path", "validation_path", "test_path"):
    if not params[key]:
      continue
    top = os.path.abspath(params[key])
    found = [top] if os.path.isfile(top) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)
    try:
      stamps += [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in found]
    except OSError as e:  # a broken link or a loop inside a data directory
      raise DataError(f"{e.filename}: cannot read it ({e.strerror}); data.task_kwargs.{key} "
                      f"= {params[key]!r} leads there.") from None
  return json.dumps(stamps)


def generate(split: str, **params) -> list[dict]:
  """The examples of `split` (see the module docstring for the parameters)."""
  graders.check_grader(params["grader"])
  if "{prompt}" not in params["prompt_template"]:
    raise DataError(f"prompt_template={params['prompt_template']!r} lacks '{{prompt}}'.")
  tables, exemplars = _read_all(json.dumps(params, sort_keys=True), fingerprint(params))
  rows = tables[split]
  if not rows:
    raise DataError(f"The {split} split of the files task is empty "
                     f"({_describe_source(split, params)}).")
  return [_with_fewshot(_example(where, row, params), exemplars, params) for where, row in rows]


@functools.lru_cache(maxsize=1)
def _read_all(params_json: str, files_fingerprint: str):
  """(rows per split, few-shot exemplars): read once for the three splits of a preparation.

  The one cached dataset stays in memory until another is read; training reads the prepared
  array_record files, not this."""
  del files_fingerprint  # part of the cache key only: a changed file is read again
  params = json.loads(params_json)
  tables = _split_tables(params)
  train = tables["train"]
  exemplars = []
  k = params["num_fewshot"]
  if k > 0:
    if k >= len(train):
      raise DataError(f"num_fewshot={k} needs more than {k} train rows; there are {len(train)}.")
    picked = set(np.random.default_rng([params["seed"], 1]).choice(len(train), k, replace=False)
                 .tolist())
    exemplars = [_example(where, row, params) for i, (where, row) in enumerate(train)
                 if i in picked]
    tables["train"] = [r for i, r in enumerate(train) if i not in picked]
  return tables, exemplars


def _describe_source(split: str, params: dict) -> str:
  own = params[f"{split}_path"]
  return own or params["path"] or params["train_path"]


def _split_tables(params: dict) -> dict[str, readers.Rows]:
  """Rows per split: from the split's own file, the source's own split, or carved from train."""
  if bool(params["path"]) == bool(params["train_path"]):
    raise DataError("The files task needs data.task_kwargs.path (one file or a directory of "
                     "splits) or data.task_kwargs.train_path (one file per split), exactly one.")
  fmt = params["format"]
  source = readers.read(params["path"] or params["train_path"], fmt)
  if readers.UNSPLIT in source:
    tables = {"train": source[readers.UNSPLIT]}
  elif "train" in source:
    tables = {s: rows for s, rows in source.items() if s in splits.SPLITS}
  else:
    raise DataError(f"{params['path']}: holds splits {sorted(source)}, none named 'train'.")
  for split in ("validation", "test"):
    if params[f"{split}_path"]:
      own = readers.read(params[f"{split}_path"], fmt)
      if readers.UNSPLIT not in own:
        raise DataError(f"{split}_path={params[f'{split}_path']!r} holds several splits; "
                         "point it at one file.")
      tables[split] = own[readers.UNSPLIT]
  missing = tuple(s for s in ("validation", "test") if s not in tables)
  repeats = _report_repeats(tables, params)
  if missing:
    train = tables["train"]
    if not train:
      raise DataError(f"{_describe_source('train', params)}: no rows to train on.")
    # Rows whose prompt occurs more than once stay in train: a carved split never holds a
    # prompt that train also holds. Without repeats this is the plain carve of every row.
    unique = [i for i in range(len(train)) if i not in repeats]
    try:
      carved = splits.carve(len(unique), params["seed"], params["validation_size"],
                            params["test_size"], missing)
    except DataError as e:
      if not repeats:
        raise
      raise DataError(f"{_describe_source('train', params)}: {e} Only rows whose prompt occurs "
                      f"once are carved, and {len(repeats)} of {len(train)} rows repeat a "
                      "prompt; give the splits their own files (validation_path, test_path) "
                      "or lower validation_size / test_size.") from None
    tables["train"] = [train[i] for i in sorted([unique[i] for i in carved["train"]] + [*repeats])]
    for split in missing:
      tables[split] = [train[unique[i]] for i in carved[split]]
  return tables


def _prompt_key(row: dict, params: dict) -> str | None:
  """The row's prompt (its prompt or messages column) as a comparable string; None without."""
  value = row.get(params["messages_field"] or params["prompt_field"])
  return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _report_repeats(tables: dict, params: dict) -> set[int]:
  """Warns (one line) of rows that repeat an earlier row's prompt, within a split or between
  train and a split of its own; returns the indices of train rows whose prompt repeats."""
  seen, first, repeated, notes = {}, {}, set(), []
  for split in ("train", "validation", "test"):
    for i, (where, row) in enumerate(tables.get(split, ())):
      key = _prompt_key(row, params)
      if key is None:  # reported with its line when the example is made
        continue
      if key in seen:
        notes.append(f"{where} repeats {seen[key]}")
        if split == "train":
          repeated |= {i, first[key]}
      else:
        seen[key] = where
        if split == "train":
          first[key] = i
  if notes:
    _log.warning("%d rows repeat the prompt of an earlier row (%s%s); carved validation and "
                 "test splits leave such rows in train.", len(notes), "; ".join(notes[:3]),
                 "; ..." if len(notes) > 3 else "")
  return repeated


def _field(where: str, row: dict, name: str, param: str):
  if name not in row:
    raise DataError(f"{where}: no field {name!r} (data.task_kwargs.{param}); the row has "
                     f"{sorted(row)}.")
  return row[name]


def _string(where: str, row: dict, name: str, param: str) -> str:
  value = _field(where, row, name, param)
  if not isinstance(value, str):
    raise DataError(f"{where}: field {name!r} is not a string ({type(value).__name__}).")
  return value


def _chat(where: str, row: dict, params: dict) -> tuple[list[dict], str]:
  """(prompt messages, response) of a chat row."""
  name = params["messages_field"]
  messages = _field(where, row, name, "messages_field")
  if isinstance(messages, str):  # CSV cells hold JSON text
    try:
      messages = json.loads(messages)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: field {name!r} is not a JSON list of messages "
                       f"({e.msg}).") from None
  if not isinstance(messages, list) or not all(
      isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
      for m in messages):
    raise DataError(f"{where}: field {name!r} must be a list of {{'role': str, 'content': "
                     "str}} messages.")
  last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
  if last is None:
    raise DataError(f"{where}: field {name!r} has no assistant message to learn as the response.")
  if last != len(messages) - 1:
    raise DataError(f"{where}: field {name!r} has messages after the last assistant message.")
  prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
  if not any(m["content"].strip() for m in prompt):
    raise DataError(f"{where}: field {name!r} has no prompt before the assistant's response.")
  return prompt, messages[last]["content"]


def _example(where: str, row: dict, params: dict) -> dict:
  if params["messages_field"]:
    chat, response = _chat(where, row, params)
    prompt = render_plain(chat)
  else:
    chat = None
    prompt = _string(where, row, params["prompt_field"], "prompt_field")
    response = _string(where, row, params["response_field"], "response_field")
    if not prompt.strip():
      raise DataError(f"{where}: field {params['prompt_field']!r} is empty.")
    prompt = params["prompt_template"].replace("{prompt}", prompt)
  grader = params["grader"]
  if params["answer_field"]:
    answer = _field(where, row, params["answer_field"], "answer_field")
    if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
      raise DataError(f"{where}: field {params['answer_field']!r} is neither a string nor a "
                       f"number ({type(answer).__name__}).")
    answer = str(answer).strip()
  elif grader == "numeric":
    answer = graders.extract_answer(response)
    if answer is None:
      raise DataError(f"{where}: no number in the response for the numeric grader; add an "
                       "answer column and set data.task_kwargs.answer_field.")
  else:
    answer = response.strip() if grader == "exact" else ""
  return {"prompt": prompt, "response": response, "answer": answer, "grader": grader,
          "messages": json.dumps(chat) if chat is not None else "", "source": where}


def _with_fewshot(example: dict, exemplars: list[dict], params: dict) -> dict:
  if not exemplars:
    return example
  if params["messages_field"]:
    turns = []
    for e in exemplars:  # an exemplar's system message would repeat: keep the example's own
      turns += [m for m in json.loads(e["messages"]) if m["role"] != "system"]
      turns.append({"role": "assistant", "content": e["response"]})
    chat = json.loads(example["messages"])
    system = [m for m in chat[:1] if m["role"] == "system"]
    chat = system + turns + chat[len(system):]
    return dict(example, prompt=render_plain(chat), messages=json.dumps(chat))
  sep = params["fewshot_separator"]
  shots = sep.join(e["prompt"] + e["response"] for e in exemplars)
  return dict(example, prompt=shots + sep + example["prompt"])
