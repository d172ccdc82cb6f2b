"""The task registry: every dataset gkd trains or evaluates on is a `Task`.

A task turns (split, parameters) into a deterministic list of examples, dicts with
at least "prompt", "response", "answer" and "grader", and grades completions.
`gkd.data.builders` writes those examples as TFDS array_record datasets, and
`gkd.data.pipeline` reads them with grain.

Tasks (`TASK_NAMES`):
  arithmetic        CPU testbed: short arithmetic with a worked solution (char-level friendly)
  chain_orders      sums of 4-6 terms added in an order drawn per example (several valid paths)
  basic_arithmetic  reasoning-gym basic_arithmetic, step-by-step solution ending "#### N"
  chain_sum         reasoning-gym chain_sum, same format
  gsm_symbolic      reasoning-gym gsm_symbolic (the GKD paper's GSM8K setting, offline)
  shakespeare       continuation of Shakespeare passages, split by play (test plays unseen)
  instructions      templated instructions + prompts of the tasks above, for chat models
  gsm8k, xsum, wmt  catalogue datasets read from local files; a clear error when absent
  files             a researcher's own data: JSONL, CSV, Parquet, HF or TFDS directories

Every task takes its parameters as keyword arguments, which a run config sets in
`data.task_kwargs`; `default_kwargs(name)` gives the full default set (what a config starts from,
so that each one can be overridden on the command line).
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Callable

from gkd.data import catalogue, files, graders, instructions, reasoning, shakespeare, splits
from gkd.errors import ConfigError, DataError
from gkd.models.tokenizer import Tokenizer, char_tokenizer

SPLITS = splits.SPLITS

# Printable ASCII (no tab/CR/FF/VT) plus newline and the one non-ASCII letter of the
# Shakespeare texts: covers every testbed task (arithmetic, shakespeare, instructions).
TESTBED_ALPHABET = "".join(c for c in string.printable if c not in "\t\r\x0b\x0c") + "æ"


def testbed_tokenizer() -> Tokenizer:
  """The char-level tokenizer of the CPU testbed (vocabulary of about 100 tokens)."""
  return char_tokenizer(TESTBED_ALPHABET)


@dataclasses.dataclass(frozen=True)
class Task:
  """A named task. `defaults` are its generation parameters (seed and split sizes at least)."""

  name: str
  description: str
  defaults: tuple[tuple[str, Any], ...]
  generator: Callable[..., list[dict]] = dataclasses.field(repr=False, compare=False)
  # Tasks reading local files: a summary of those files (sizes, times), so that prepared data
  # is rebuilt when they change although the parameters do not.
  fingerprint: Callable[[dict], str] | None = dataclasses.field(default=None, repr=False,
                                                                compare=False)

  def params(self, **overrides) -> dict:
    """The full parameter dict; unknown parameter names are an error, not ignored."""
    params = dict(self.defaults)
    unknown = sorted(set(overrides) - set(params))
    if unknown:
      raise ConfigError(f"data.task_kwargs: task {self.name!r} has no parameters {unknown}; "
                       f"it takes {sorted(params)}.")
    params.update(overrides)
    return params

  def generate(self, split: str, **params) -> list[dict]:
    """The examples of `split`, deterministic in the parameters (seed, sizes, ...)."""
    splits.check_split(split)
    examples = self.generator(split, **self.params(**params))
    for i, example in enumerate(examples):
      _check_example(self.name, split, i, example)
    return examples

  def grade(self, completion: str, example: dict) -> float:
    """Scores one completion (the generated text after the prompt) in [0, 1] with the
    example's grader (see gkd.data.graders)."""
    return graders.grade(example.get("grader", "numeric"), completion, example)


def _check_example(task: str, split: str, index: int, example: dict) -> None:
  for key in ("prompt", "response", "answer", "grader"):
    if not isinstance(example.get(key), str):
      raise DataError(f"{task}/{split} example {index} lacks a string {key!r}: {example!r:.200}")
  if not example["prompt"].strip():
    raise DataError(f"{task}/{split} example {index} has an empty prompt.")
  if example["grader"] not in graders.GRADERS:
    raise DataError(f"{task}/{split} example {index} has unknown grader {example['grader']!r}.")


def _sizes(train: int, validation: int, test: int) -> tuple:
  return (("num_train", train), ("num_validation", validation), ("num_test", test))


def _reasoning(name: str, description: str, sizes: tuple) -> Task:
  def generator(split, **params):
    return reasoning.generate(name, split, **params)

  return Task(name, description, (("seed", 0),) + sizes, generator)


_TASKS = {
    "arithmetic": _reasoning(
        "arithmetic", "CPU testbed: '7+5-3=' -> '7+5=12, 12-3=9. Answer: 9' (prompt <= 32, "
        "response <= 64 chars), from reasoning-gym chain_sum and basic_arithmetic.",
        _sizes(20000, 500, 2000)),
    "chain_orders": Task(
        "chain_orders", "Sums of signed terms (reasoning-gym chain_sum, 4-6 terms) solved one term "
        "at a time in an order drawn per example: '3-5+8=' -> '-5+8=3, 3+3=6. Answer: 6'; "
        "order='left' keeps the written order.", reasoning.CHAIN_ORDERS_DEFAULTS,
        reasoning.generate_chain_orders),
    "basic_arithmetic": _reasoning(
        "basic_arithmetic", "reasoning-gym basic_arithmetic (2-6 terms, + - * /, parentheses) "
        "with a step-by-step solution ending '#### N'.", _sizes(20000, 500, 1000)),
    "chain_sum": _reasoning(
        "chain_sum", "reasoning-gym chain_sum (2-6 terms of + and -) with a step-by-step "
        "solution ending '#### N'.", _sizes(20000, 500, 1000)),
    "gsm_symbolic": _reasoning(
        "gsm_symbolic", "reasoning-gym gsm_symbolic: GSM8K-style word problems with worked "
        "solutions ending '#### N'.", _sizes(20000, 500, 1000)),
    "shakespeare": Task(
        "shakespeare", "Continue a Shakespeare passage; plays are split so that test plays are "
        "unseen.", shakespeare.DEFAULTS, shakespeare.generate),
    "instructions": Task(
        "instructions", "Templated instructions with checkable answers, plus arithmetic and "
        "Shakespeare prompts phrased as requests; meant to be wrapped in the chat template.",
        instructions.DEFAULTS, instructions.generate),
    "gsm8k": Task(
        "gsm8k", "GSM8K from the official JSONL files (train.jsonl, test.jsonl) on local disk.",
        catalogue.GSM8K_DEFAULTS, catalogue.generate_gsm8k),
    "xsum": Task(
        "xsum", "XSum from local JSONL files ({train,validation,test}.jsonl: document, summary).",
        catalogue.XSUM_DEFAULTS, catalogue.generate_xsum),
    "wmt": Task(
        "wmt", "WMT translation from local JSONL files ({train,validation,test}.jsonl with one "
        "key per language).", catalogue.WMT_DEFAULTS, catalogue.generate_wmt),
    "files": Task(
        "files", "Your own data from JSONL, CSV or Parquet files, or saved Hugging Face / "
        "prepared TFDS directories; fields, grader, splits and few-shot set in "
        "data.task_kwargs.", files.DEFAULTS, files.generate, fingerprint=files.fingerprint),
}
TASK_NAMES = tuple(_TASKS)


def get_task(name: str) -> Task:
  """The task called `name`; an unknown name raises ConfigError listing the valid ones."""
  try:
    return _TASKS[name]
  except (KeyError, TypeError):
    raise ConfigError(f"Unknown task {name!r} (data.task); valid tasks: "
                      f"{', '.join(TASK_NAMES)}.") from None


def default_kwargs(name: str) -> dict:
  """The parameters of task `name` with their defaults, for a config's `data.task_kwargs`.

  ml_collections lets the command line override only keys that exist, so a config fills
  `task_kwargs` with these and then changes what it needs. No default is None (a None field
  cannot be overridden from the command line): unset paths are "", "all examples" is 0.
  """
  return get_task(name).params()
