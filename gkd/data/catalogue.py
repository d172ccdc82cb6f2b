"""Catalogue datasets (GSM8K, XSum, WMT) read from files already on local disk.

The TFDS catalogue downloaders would retry DNS for a long time on a machine without
internet, so gkd never calls them: these tasks look for local files first and raise
FileNotFoundError naming every place they looked, and how to get the files, if absent.

Where the files are looked for (first hit wins), with RAW = $GKD_RAW_DIR or ~/.cache/gkd/raw:
  gsm8k  the `path` parameter, $GKD_GSM8K_DIR, RAW/gsm8k, RAW/grade_school_math/data:
         train.jsonl and test.jsonl of github.com/openai/grade-school-math
         (fields "question", "answer"; the answer ends with "#### N").
         Validation = `num_validation` examples held out of train by seed.
  xsum   the `path` parameter, RAW/xsum: {train,validation,test}.jsonl with "document" and
         "summary" (as the Hugging Face / TFDS xsum fields).
  wmt    the `path` parameter, RAW/wmt/{source}-{target}: {train,validation,test}.jsonl, one
         object per line, either {"translation": {"de": ..., "en": ...}} or {"de": ..., "en": ...}.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from gkd.errors import DataError, MissingFile

# "" (no path) looks in the default places; a size of 0 takes the whole split.
GSM8K_DEFAULTS = (("seed", 0), ("path", ""), ("num_validation", 500))
XSUM_DEFAULTS = (("path", ""), ("num_train", 0), ("num_validation", 0), ("num_test", 0))
WMT_DEFAULTS = (("path", ""), ("source", "de"), ("target", "en"), ("num_train", 0),
                ("num_validation", 0), ("num_test", 0))
LANGUAGES = {"cs": "Czech", "de": "German", "en": "English", "fi": "Finnish", "fr": "French",
             "hi": "Hindi", "ro": "Romanian", "ru": "Russian", "tr": "Turkish", "zh": "Chinese"}


def raw_dir() -> str:
  return os.environ.get("GKD_RAW_DIR", os.path.expanduser("~/.cache/gkd/raw"))


def find_files(task: str, candidates: list[str | None], names: list[str], how: str) -> str:
  """The first candidate folder holding all `names`, else a FileNotFoundError saying where
  it looked and how to get the files. Never touches the network."""
  tried = [c for c in candidates if c]
  for folder in tried:
    if all(os.path.isfile(os.path.join(folder, n)) for n in names):
      return folder
  raise MissingFile(
      f"Task {task!r} needs local files {names}, found in none of: {tried}. {how} "
      "(gkd never downloads: catalogue downloaders hang without network.)")


def _read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    rows = []
    for line_no, line in enumerate(f, 1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise DataError(f"{path}:{line_no} is not valid JSON: {e}") from e
  return rows


def _cap(rows: list, n: int) -> list:
  if n < 0:
    raise DataError(f"A split size of {n}: use a count >= 1, or 0 for the whole split.")
  return rows[:n] if n else rows


# -- GSM8K ---------------------------------------------------------------------------------
def _gsm8k_example(row: dict, where: str) -> dict:
  solution = re.sub(r"<<[^>]*>>", "", row["answer"]).strip()  # drop calculator annotations
  if "####" not in solution:
    raise DataError(f"{where}: a GSM8K answer without '####': {row['answer'][:80]!r}")
  answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
  return {"prompt": row["question"].strip(), "response": solution, "answer": answer,
          "grader": "numeric"}


def generate_gsm8k(split: str, *, seed: int, path: str, num_validation: int) -> list[dict]:
  raw = raw_dir()
  folder = find_files("gsm8k", [path, os.environ.get("GKD_GSM8K_DIR"),
                                os.path.join(raw, "gsm8k"),
                                os.path.join(raw, "grade_school_math", "data")],
                      ["train.jsonl", "test.jsonl"],
                      "Copy grade_school_math/data/{train,test}.jsonl from "
                      "https://github.com/openai/grade-school-math there, or pass path=...")
  if split == "test":
    rows = _read_jsonl(os.path.join(folder, "test.jsonl"))
    return [_gsm8k_example(r, "test.jsonl") for r in rows]
  train = [_gsm8k_example(r, "train.jsonl")
           for r in _read_jsonl(os.path.join(folder, "train.jsonl"))]
  if not 0 <= num_validation < len(train):
    raise DataError(f"num_validation={num_validation} must be in [0, {len(train)}).")
  order = np.random.default_rng(seed).permutation(len(train))
  held_out = set(order[:num_validation].tolist())
  if split == "validation":
    return [train[i] for i in sorted(held_out)]
  return [e for i, e in enumerate(train) if i not in held_out]


# -- XSum ----------------------------------------------------------------------------------
def generate_xsum(split: str, *, path: str, num_train: int, num_validation: int,
                  num_test: int) -> list[dict]:
  folder = find_files("xsum", [path, os.path.join(raw_dir(), "xsum")],
                      ["train.jsonl", "validation.jsonl", "test.jsonl"],
                      "Export the XSum splits as JSONL with 'document' and 'summary' fields there, "
                      "or pass path=...")
  cap = {"train": num_train, "validation": num_validation, "test": num_test}[split]
  rows = _cap(_read_jsonl(os.path.join(folder, f"{split}.jsonl")), cap)
  return [{"prompt": f"Summarize in one sentence:\n\n{r['document'].strip()}",
           "response": r["summary"].strip(), "answer": "", "grader": "rouge"} for r in rows]


# -- WMT -----------------------------------------------------------------------------------
def generate_wmt(split: str, *, path: str, source: str, target: str, num_train: int,
                 num_validation: int, num_test: int) -> list[dict]:
  pair = f"{source}-{target}"
  folder = find_files("wmt", [path, os.path.join(raw_dir(), "wmt", pair)],
                      ["train.jsonl", "validation.jsonl", "test.jsonl"],
                      f"Export the WMT {pair} splits as JSONL "
                      f"({{'{source}': ..., '{target}': ...}} per line) there, or pass path=...")
  cap = {"train": num_train, "validation": num_validation, "test": num_test}[split]
  out = []
  for r in _cap(_read_jsonl(os.path.join(folder, f"{split}.jsonl")), cap):
    r = r.get("translation", r)
    if source not in r or target not in r:
      raise DataError(f"wmt {split}.jsonl: a line without both {source!r} and {target!r}: "
                       f"{sorted(r)}")
    prompt = (f"Translate from {LANGUAGES.get(source, source)} to "
              f"{LANGUAGES.get(target, target)}:\n\n{r[source].strip()}")
    out.append({"prompt": prompt, "response": r[target].strip(), "answer": "", "grader": "bleu"})
  return out
