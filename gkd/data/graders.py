"""Graders: how one completion is scored against its example, chosen by name.

  numeric  1 iff the final number of the completion (see `extract_answer`) equals the
           example's "answer" numerically ("18.0" == "18")
  exact    1 iff the completion equals the "answer", whitespace-normalized
  rouge    ROUGE-L F-measure against the reference "response" (rouge-score, Porter stemmer)
  bleu     sentence BLEU / 100 against the reference "response" (sacrebleu, exp smoothing)
  none     not graded: the task is scored by text metrics only (ROUGE, BLEU)

Scores lie in [0, 1]. ROUGE and BLEU come from the libraries the literature uses
(rouge-score as in T5X and the GKD paper; sacrebleu), imported on first use because
rouge-score loads NLTK (~3 s).
"""

from __future__ import annotations

import fractions
import functools
import re

from gkd.errors import ConfigError

GRADERS = ("numeric", "exact", "rouge", "bleu", "none")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# A number: "1,234.5" (thousands separators) or "-12" / "3.25". The minus only counts when
# it is not a binary minus ("12-3" holds 12 and 3, not -3).
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_MARKERS = (re.compile(r"####"), re.compile(r"answer\s*(?:is|:)", re.IGNORECASE))


def check_grader(grader: str) -> None:
  if grader not in GRADERS:
    raise ConfigError(f"Unknown grader {grader!r} (data.task_kwargs.grader); use one of {GRADERS}.")


def extract_answer(text: str) -> str | None:
  """The final numeric answer of a solution, or None.

  Looks, in order, for the first number after the last "####" (GSM8K style), after the last
  "Answer:" / "answer is" (the testbed style), and else takes the last number in the text.
  Thousands separators are removed: "1,234" -> "1234".
  """
  for marker in _MARKERS:
    hits = list(marker.finditer(text))
    if hits:
      match = _NUMBER.search(text, hits[-1].end())
      return match.group(0).replace(",", "") if match else None
  numbers = _NUMBER.findall(text)
  return numbers[-1].replace(",", "") if numbers else None


def _to_number(text: str | None) -> fractions.Fraction | None:
  if text is None:
    return None
  text = text.strip().replace(",", "").replace("$", "").rstrip(".")
  try:
    return fractions.Fraction(text)
  except (ValueError, ZeroDivisionError):
    return None


def answers_match(predicted: str | None, reference: str) -> bool:
  """Numeric equality ("18.0" == "18"); non-numbers compare as stripped strings."""
  a, b = _to_number(predicted), _to_number(reference)
  if a is None or b is None:
    return predicted is not None and predicted.strip() == reference.strip()
  return a == b


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
  from rouge_score import rouge_scorer

  return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
  """ROUGE-1, ROUGE-2 and ROUGE-L F-measures of one prediction against one reference."""
  scores = _rouge_scorer().score(reference, prediction)  # rouge-score takes (target, prediction)
  return {k: float(scores[k].fmeasure) for k in ROUGE_TYPES}


def sentence_bleu(prediction: str, reference: str) -> float:
  """sacrebleu's sentence BLEU in [0, 100] (13a tokenizer, exp smoothing, effective order)."""
  import sacrebleu

  return float(sacrebleu.sentence_bleu(prediction, [reference]).score)


def grade(grader: str, completion: str, example: dict) -> float:
  """The score in [0, 1] of `completion` (the text generated after the prompt) for `example`."""
  check_grader(grader)
  if grader == "none":
    raise ValueError("Examples with grader 'none' have no grade; score them with text metrics.")
  if grader == "numeric":
    return float(answers_match(extract_answer(completion), example["answer"]))
  if grader == "exact":
    return float(" ".join(completion.split()) == " ".join(example["answer"].split()))
  if grader == "rouge":
    return rouge(completion, example["response"])["rougeL"]
  return sentence_bleu(completion, example["response"]) / 100.0
