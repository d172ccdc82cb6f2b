"""The task registry: every dataset gkd trains or evaluates on is a `Task`.

A task turns (split, parameters) into a deterministic list of examples, dicts with
at least "prompt", "response", "answer" and "grader", and grades completions.
`gkd.data.builders` writes those examples as TFDS array_record datasets, and
`gkd.data.pipeline` reads them with grain.

Tasks (`TASK_NAMES`):
  arithmetic        CPU testbed: short arithmetic with a worked solution (char-level friendly)
  basic_arithmetic  reasoning-gym basic_arithmetic, step-by-step solution ending "#### N"
  chain_sum         reasoning-gym chain_sum, same format
  gsm_symbolic      reasoning-gym gsm_symbolic (the GKD paper's GSM8K setting, offline)
  shakespeare       continuation of Shakespeare passages, split by play (test plays unseen)
  instructions      templated instructions + prompts of the tasks above, for chat models
  gsm8k, xsum, wmt  catalogue datasets read from local files; a clear error when absent
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any, Callable

from gkd.data import catalogue, instructions, reasoning, shakespeare
from gkd.eval import metrics
from gkd.models.tokenizer import Tokenizer, char_tokenizer

SPLITS = ("train", "validation", "test")
KINDS = ("reasoning", "continuation", "instruction", "summarization", "translation")
GRADERS = ("numeric", "exact", "rouge", "bleu")

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
  kind: str
  metric: str  # the headline text metric: "accuracy", "rouge" or "bleu"
  description: str
  defaults: tuple[tuple[str, Any], ...]
  generator: Callable[..., list[dict]] = dataclasses.field(repr=False, compare=False)

  def params(self, **overrides) -> dict:
    """The full parameter dict; unknown parameter names are an error, not ignored."""
    params = dict(self.defaults)
    unknown = sorted(set(overrides) - set(params))
    if unknown:
      raise ValueError(f"Task {self.name!r} has no parameters {unknown}; "
                       f"it takes {sorted(params)}.")
    params.update(overrides)
    return params

  def generate(self, split: str, **params) -> list[dict]:
    """The examples of `split`, deterministic in the parameters (seed, sizes, ...)."""
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")
    examples = self.generator(split, **self.params(**params))
    for i, example in enumerate(examples):
      _check_example(self.name, split, i, example)
    return examples

  def grade(self, completion: str, example: dict) -> float:
    """Scores one completion (the generated text after the prompt) in [0, 1].

    numeric: 1.0 iff the extracted final answer equals example["answer"] (reasoning tasks);
    exact: 1.0 iff the stripped completion equals the answer; rouge: ROUGE-L F1 against the
    reference response; bleu: sentence BLEU / 100 against the reference response.
    """
    grader = example.get("grader", "numeric")
    if grader == "numeric":
      return float(metrics.answers_match(metrics.extract_answer(completion), example["answer"]))
    if grader == "exact":
      return float(" ".join(completion.split()) == " ".join(example["answer"].split()))
    if grader == "rouge":
      return metrics.rouge(completion, example["response"])["rougeL"]
    if grader == "bleu":
      return metrics.bleu([completion], [example["response"]]) / 100.0
    raise ValueError(f"Unknown grader {grader!r} in an example of {self.name}; "
                     f"use one of {GRADERS}.")


def _check_example(task: str, split: str, index: int, example: dict) -> None:
  for key in ("prompt", "response", "answer", "grader"):
    if not isinstance(example.get(key), str):
      raise ValueError(f"{task}/{split} example {index} lacks a string {key!r}: {example!r:.200}")
  if not example["prompt"].strip():
    raise ValueError(f"{task}/{split} example {index} has an empty prompt.")
  if example["grader"] not in GRADERS:
    raise ValueError(f"{task}/{split} example {index} has unknown grader {example['grader']!r}.")


def _sizes(train: int, validation: int, test: int) -> tuple:
  return (("num_train", train), ("num_validation", validation), ("num_test", test))


def _reasoning(name: str, description: str, sizes: tuple) -> Task:
  def generator(split, **params):
    return reasoning.generate(name, split, **params)

  return Task(name, "reasoning", "accuracy", description, (("seed", 0),) + sizes, generator)


_TASKS = {
    "arithmetic": _reasoning(
        "arithmetic", "CPU testbed: '7+5-3=' -> '7+5=12, 12-3=9. Answer: 9' (prompt <= 32, "
        "response <= 64 chars), from reasoning-gym chain_sum and basic_arithmetic.",
        _sizes(20000, 500, 2000)),
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
        "shakespeare", "continuation", "rouge",
        "Continue a Shakespeare passage; plays are split so that test plays are unseen.",
        shakespeare.DEFAULTS, shakespeare.generate),
    "instructions": Task(
        "instructions", "instruction", "accuracy",
        "Templated instructions with checkable answers, plus arithmetic and Shakespeare "
        "prompts phrased as requests; meant to be wrapped in the chat template.",
        instructions.DEFAULTS, instructions.generate),
    "gsm8k": Task(
        "gsm8k", "reasoning", "accuracy",
        "GSM8K from the official JSONL files (train.jsonl, test.jsonl) on local disk.",
        catalogue.GSM8K_DEFAULTS, catalogue.generate_gsm8k),
    "xsum": Task(
        "xsum", "summarization", "rouge",
        "XSum from local JSONL files ({train,validation,test}.jsonl: document, summary).",
        catalogue.XSUM_DEFAULTS, catalogue.generate_xsum),
    "wmt": Task(
        "wmt", "translation", "bleu",
        "WMT translation from local JSONL files ({train,validation,test}.jsonl with one key "
        "per language).", catalogue.WMT_DEFAULTS, catalogue.generate_wmt),
}
TASK_NAMES = tuple(_TASKS)


def get_task(name: str) -> Task:
  """The task called `name`; an unknown name raises ValueError listing the valid ones."""
  try:
    return _TASKS[name]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown task {name!r}; valid tasks: {', '.join(TASK_NAMES)}.") from None
