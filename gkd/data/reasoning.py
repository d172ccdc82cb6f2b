"""Reasoning tasks from reasoning-gym: the CPU testbed `arithmetic`, the term-order sums
`chain_orders`, and the `basic_arithmetic`, `chain_sum` and `gsm_symbolic` levels.

Splits are fixed by the task seed: each split draws from its own reasoning-gym
seed, the test split first, then validation without any test prompt, then train
without any validation or test prompt, so no evaluation problem is ever trained
on. Examples are dicts with "prompt", "response", "answer" and "grader".
"""

from __future__ import annotations

import functools
import random
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


# chain_orders: sums of signed terms (reasoning-gym chain_sum) solved by adding the terms one at a
# time in an order drawn per example, e.g. "12+45-6+8=" -> "-6+8=2, 2+12=14, 14+45=59. Answer: 59".
# Every order is a valid solution, so the first steps a model writes decide the partial sums that
# follow; order="left" keeps the expression's own order (one path) as a control.
CHAIN_ORDERS_DEFAULTS = (("seed", 0), ("num_train", 20000), ("num_validation", 500),
                         ("num_test", 2000), ("min_terms", 4), ("max_terms", 6), ("min_digits", 1),
                         ("max_digits", 2), ("order", "random"))
CHAIN_ORDERS = ("random", "left")


def chain_orders_example(config: tuple, order: str, rg_seed: int, index: int, size: int) -> dict:
  """Entry `index` of the chain_sum stream seeded `rg_seed`, solved term by term in `order`."""
  entry = _rg_entry("chain_sum", dict(config), rg_seed, index, size)
  expression = entry["metadata"]["expression"].replace(" ", "")
  terms = arith.signed_terms(expression)
  ids = list(range(len(terms)))
  if order == "random":  # seeded by the entry, so a split's examples never depend on its size
    random.Random(f"{rg_seed}/{index}").shuffle(ids)
  steps, value = arith.sum_in_order(terms, ids)
  _check_value(value, entry)
  return {"prompt": f"{expression}=", "response": f"{', '.join(steps)}. Answer: {value}",
          "answer": str(value), "grader": "numeric"}


@functools.lru_cache(maxsize=8)
def _chain_orders_splits(seed: int, sizes: tuple, config: tuple, order: str):
  make = functools.partial(chain_orders_example, config, order)
  return _draw(make, dict(sizes), seed)


def generate_chain_orders(split: str, *, seed: int, num_train: int, num_validation: int,
                          num_test: int, min_terms: int, max_terms: int, min_digits: int,
                          max_digits: int, order: str) -> list[dict]:
  """Examples of the `chain_orders` task in `split` (see CHAIN_ORDERS_DEFAULTS)."""
  if order not in CHAIN_ORDERS:
    raise ValueError(f"order={order!r}; use one of {CHAIN_ORDERS}.")
  if not 2 <= min_terms <= max_terms:
    raise ValueError(f"need 2 <= min_terms <= max_terms, got {min_terms}, {max_terms}.")
  sizes = (("train", num_train), ("validation", num_validation), ("test", num_test))
  for split_name, n in sizes:
    if n < 0:
      raise ValueError(f"num_{split_name}={n} must be >= 0")
  config = tuple(sorted(dict(min_terms=min_terms, max_terms=max_terms, min_digits=min_digits,
                             max_digits=max_digits).items()))
  return [dict(e) for e in _chain_orders_splits(seed, sizes, config, order)[split]]
