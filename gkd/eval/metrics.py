"""Text-level task metrics, pure Python/NumPy: answer extraction and accuracy, ROUGE, BLEU,
distinct-n, perplexity, and atomic JSON results.

The model-level evaluation loop (generation, KL to the teacher) lives elsewhere and calls
these on decoded text.
"""

from __future__ import annotations

import collections
import fractions
import json
import math
import os
import re
import tempfile
from typing import Iterable, Sequence

# A number: "1,234.5" (thousands separators) or "-12" / "3.25". The minus only counts when
# it is not a binary minus ("12-3" holds 12 and 3, not -3).
_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_MARKERS = (re.compile(r"####"), re.compile(r"answer\s*(?:is|:)", re.IGNORECASE))


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


def accuracy(task, completions: Sequence[str], examples: Sequence[dict]) -> float:
  """Mean grade of `completions` against `examples` with the task's grader (a Task or name)."""
  from gkd.data import tasks  # lazy: tasks imports this module

  if isinstance(task, str):
    task = tasks.get_task(task)
  if len(completions) != len(examples):
    raise ValueError(f"{len(completions)} completions for {len(examples)} examples.")
  if not examples:
    raise ValueError("accuracy of zero examples is undefined.")
  return float(sum(task.grade(c, e) for c, e in zip(completions, examples)) / len(examples))


# -- ROUGE -------------------------------------------------------------------------------------
def _rouge_tokens(text: str) -> list[str]:
  # As rouge_score's default tokenizer without stemming: lowercase alphanumeric runs.
  return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _ngrams(tokens: Sequence, n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap: int, predicted: int, reference: int) -> float:
  if overlap == 0 or predicted == 0 or reference == 0:
    return 0.0
  precision, recall = overlap / predicted, overlap / reference
  return 2 * precision * recall / (precision + recall)


def _lcs(a: Sequence, b: Sequence) -> int:
  row = [0] * (len(b) + 1)
  for x in a:
    prev_diag = 0
    for j, y in enumerate(b, 1):
      prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
  return row[-1]


def rouge(prediction: str, reference: str) -> dict[str, float]:
  """ROUGE-1, ROUGE-2 and ROUGE-L F1 (no stemming) of one prediction against one reference."""
  p, r = _rouge_tokens(prediction), _rouge_tokens(reference)
  scores = {}
  for n in (1, 2):
    pn, rn = _ngrams(p, n), _ngrams(r, n)
    scores[f"rouge{n}"] = _f1(sum((pn & rn).values()), sum(pn.values()), sum(rn.values()))
  scores["rougeL"] = _f1(_lcs(p, r), len(p), len(r))
  return scores


def mean_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """ROUGE scores averaged over pairs."""
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"need equal, non-zero numbers of predictions ({len(predictions)}) and "
                     f"references ({len(references)}).")
  scores = [rouge(p, r) for p, r in zip(predictions, references)]
  return {k: float(sum(s[k] for s in scores) / len(scores)) for k in scores[0]}


# -- BLEU --------------------------------------------------------------------------------------
def _bleu_tokens(text: str) -> list[str]:
  # Words and single punctuation marks, case kept (close to sacrebleu's 13a tokenizer).
  return re.findall(r"\w+|[^\w\s]", text)


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
         max_order: int = 4) -> float:
  """Corpus BLEU (Papineni et al. 2002) in [0, 100], uniform weights, no smoothing.

  `references[i]` is one reference string or a list of them. Clipped n-gram counts and
  lengths are summed over the corpus; the brevity penalty uses, per sentence, the reference
  length closest to the prediction's (the shorter on ties).
  """
  if len(predictions) != len(references) or not predictions:
    raise ValueError(f"need equal, non-zero numbers of predictions ({len(predictions)}) and "
                     f"references ({len(references)}).")
  matches, totals = [0] * max_order, [0] * max_order
  pred_len = ref_len = 0
  for prediction, refs in zip(predictions, references):
    refs = [refs] if isinstance(refs, str) else list(refs)
    p, rs = _bleu_tokens(prediction), [_bleu_tokens(r) for r in refs]
    pred_len += len(p)
    ref_len += min((abs(len(r) - len(p)), len(r)) for r in rs)[1]
    for n in range(1, max_order + 1):
      pn = _ngrams(p, n)
      best = collections.Counter()
      for r in rs:
        best |= _ngrams(r, n)  # max count of each n-gram over references
      matches[n - 1] += sum((pn & best).values())
      totals[n - 1] += sum(pn.values())
  if pred_len == 0 or min(matches) == 0:
    return 0.0
  log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_order
  brevity = 1.0 if pred_len > ref_len else math.exp(1 - ref_len / pred_len)
  return 100.0 * brevity * math.exp(log_precision)


# -- diversity and likelihood ------------------------------------------------------------------
def distinct_n(texts: Iterable[str | Sequence[int]], n: int) -> float:
  """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whole set of samples.

  Strings are split on whitespace; token sequences (lists/arrays of ids) are used as they are.
  Returns 0.0 when the samples hold no n-gram at all.
  """
  if n < 1:
    raise ValueError(f"n={n} must be >= 1")
  counts = collections.Counter()
  for text in texts:
    tokens = text.split() if isinstance(text, str) else [int(t) for t in text]
    counts.update(_ngrams(tokens, n))
  total = sum(counts.values())
  return len(counts) / total if total else 0.0


def perplexity(total_nll: float, num_tokens: int) -> float:
  """exp(total negative log-likelihood in nats / number of tokens)."""
  if num_tokens <= 0:
    raise ValueError(f"perplexity needs num_tokens > 0, got {num_tokens}")
  return float(math.exp(total_nll / num_tokens))


def task_metrics(task, completions: Sequence[str], examples: Sequence[dict]) -> dict[str, float]:
  """The text metrics that fit a task: accuracy for graded tasks, ROUGE and BLEU for text."""
  from gkd.data import tasks

  if isinstance(task, str):
    task = tasks.get_task(task)
  out = {"accuracy": accuracy(task, completions, examples)}
  if task.metric in ("rouge", "bleu"):
    references = [e["response"] for e in examples]
    out.update(mean_rouge(completions, references))
    out["bleu"] = bleu(completions, references)
  return out


# -- results -----------------------------------------------------------------------------------
def _json_default(value):
  if hasattr(value, "tolist"):  # NumPy / JAX scalars and arrays
    return value.tolist()
  raise TypeError(f"Cannot write {type(value).__name__} as JSON")


def write_results(path: str, results: dict) -> None:
  """Writes `results` as JSON atomically: a temporary file in the same folder, then os.replace."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(results, f, indent=2, sort_keys=True, default=_json_default)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
