"""Reasoning tasks from reasoning-gym: the CPU testbed `arithmetic`, and the
`basic_arithmetic`, `chain_sum` and `gsm_symbolic` levels.

Splits are fixed by the task seed: each split draws from its own reasoning-gym
seed, the test split first, then validation without any test prompt, then train
without any validation or test prompt, so no evaluation problem is ever trained
on. Examples are dicts with "prompt", "response", "answer" and "grader".
"""

from __future__ import annotations

import functools
from typing import Callable

from gkd.data import arith, splits
from gkd.errors import ConfigError

# The testbed keeps sequences short so that a char-level model of a few million
# parameters learns it in minutes: prompt "7+5-3=", response "7+5=12, 12-3=9. Answer: 9".
TESTBED_MAX_PROMPT_CHARS = 32
TESTBED_MAX_RESPONSE_CHARS = 64
_TESTBED_SOURCES = (
    ("chain_sum", dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2)),
    ("basic_arithmetic", dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1,
                              operators=("+", "-", "*"), whitespace="no_space")),
)


def stream_size(n: int) -> int:
  """How many entries a split of n examples may draw (dedup and length filters skip some).

  gsm_symbolic picks a template per entry eagerly at construction, so keep it bounded; the
  first k entries do not depend on the size (random.choices draws one by one).
  """
  return 20 * n + 1000


@functools.lru_cache(maxsize=32)
def _rg_dataset(name: str, seed: int, config: tuple, size: int):
  import reasoning_gym  # imported lazily: it loads templates on first use

  return reasoning_gym.create_dataset(name, seed=seed, size=size, **dict(config))


def _draw(make: Callable[[int, int, int], dict | None], sizes: dict[str, int], seed: int):
  """Draws each split's examples from its own stream, without repeated prompts across splits."""
  seen: set[str] = set()
  out = {}
  for split in ("test", "validation", "train"):
    n, examples, index = sizes[split], [], 0
    limit = stream_size(n)
    while len(examples) < n:
      if index >= limit:
        raise ConfigError(f"Could draw only {len(examples)} distinct {split} examples of the "
                         f"{n} asked for; ask for fewer examples.")
      example = make(splits.split_seed(seed, split), index, limit)
      index += 1
      if example is None or example["prompt"] in seen:
        continue
      seen.add(example["prompt"])
      examples.append(example)
    out[split] = tuple(examples)
  return out


def _rg_entry(name: str, config: dict, rg_seed: int, index: int, size: int) -> dict:
  return _rg_dataset(name, rg_seed, tuple(sorted(config.items())), size)[index]


def _check_value(value: int, entry: dict) -> None:
  if str(value) != entry["answer"].strip():
    raise AssertionError(f"worked solution gives {value}, reasoning-gym says {entry['answer']!r} "
                         f"for {entry['metadata']['expression']!r}")


def testbed_example(rg_seed: int, index: int, size: int) -> dict | None:
  """Entry `index` of the testbed stream seeded `rg_seed` (of `size` entries), or None when
  it is longer than the testbed allows. The `instructions` task phrases these as requests."""
  name, config = _TESTBED_SOURCES[index % len(_TESTBED_SOURCES)]
  entry = _rg_entry(name, config, rg_seed, index // len(_TESTBED_SOURCES), size)
  expression = entry["metadata"]["expression"].replace(" ", "")
  steps, value = arith.solve(expression, compact=True)
  _check_value(value, entry)
  prompt = f"{expression}="
  response = f"{', '.join(steps)}. Answer: {value}"
  if len(prompt) > TESTBED_MAX_PROMPT_CHARS or len(response) > TESTBED_MAX_RESPONSE_CHARS:
    return None  # a documented filter, applied identically for every seed
  return {"prompt": prompt, "response": response, "answer": str(value), "grader": "numeric"}


def _make_rg_arithmetic(name: str, rg_seed: int, index: int, size: int) -> dict:
  entry = _rg_entry(name, {}, rg_seed, index, size)
  steps, value = arith.solve(entry["metadata"]["expression"])
  _check_value(value, entry)
  response = "\n".join(steps + [f"#### {value}"])
  return {"prompt": entry["question"], "response": response, "answer": str(value),
          "grader": "numeric"}


def _make_gsm_symbolic(rg_seed: int, index: int, size: int) -> dict:
  entry = _rg_entry("gsm_symbolic", {}, rg_seed, index, size)
  answer = entry["answer"].strip()
  cot = entry["metadata"]["answer_cot"].strip()
  # Most solutions end with "#### N"; some don't: add the marker so that every reference
  # response states its answer the same way (and the grader reads it).
  if not cot.endswith(f"#### {answer}"):
    cot = f"{cot}\n#### {answer}"
  return {"prompt": entry["question"], "response": cot, "answer": answer, "grader": "numeric"}


_MAKERS = {
    "arithmetic": testbed_example,
    "basic_arithmetic": functools.partial(_make_rg_arithmetic, "basic_arithmetic"),
    "chain_sum": functools.partial(_make_rg_arithmetic, "chain_sum"),
    "gsm_symbolic": _make_gsm_symbolic,
}


@functools.lru_cache(maxsize=16)
def _all_splits(name: str, seed: int, num_train: int, num_validation: int, num_test: int):
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}
  for split, n in sizes.items():
    if n < 0:
      raise ConfigError(f"num_{split}={n} must be >= 0")
  return _draw(_MAKERS[name], sizes, seed)


def generate(name: str, split: str, *, seed: int, num_train: int, num_validation: int,
             num_test: int) -> list[dict]:
  """Examples of reasoning task `name` in `split` (fresh dicts; the cache stays intact)."""
  splits = _all_splits(name, seed, num_train, num_validation, num_test)
  return [dict(e) for e in splits[split]]
