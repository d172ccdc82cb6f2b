"""Text-level task metrics on decoded text: accuracy by the examples' graders, ROUGE, BLEU,
distinct-n and perplexity.

ROUGE is rouge-score's ROUGE-1/2/L F-measure with the Porter stemmer (as T5X and the GKD paper
report it), averaged over examples. BLEU is sacrebleu's corpus BLEU (13a tokenizer, mixed
case); its signature string goes into the results as `bleu_signature`, so numbers are
comparable across papers. The graders themselves (answer extraction, per-example scores) live
in gkd.data.graders. The model-level loop (generation, KL to the teacher) lives in
gkd.eval.evaluator and calls these.
"""

from __future__ import annotations

import collections
import math
from typing import Iterable, Sequence

import numpy as np

from gkd.data import graders, tasks

_TEXT_GRADERS = ("rouge", "bleu", "none")


def _check_task(task) -> None:
  # Grading follows each example's grader; the task argument is checked so that a misspelt
  # name still fails clearly.
  if isinstance(task, str):
    tasks.get_task(task)


def _check_pairs(predictions: Sequence, references: Sequence) -> None:
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} completions for {len(references)} examples.")
  if not predictions:
    raise ValueError("Metrics of zero examples are undefined.")


def grades(completions: Sequence[str], examples: Sequence[dict]) -> np.ndarray | None:
  """Per-example grades in [0, 1] by each example's grader; None when no example is graded
  (grader "none"). A mix of graded and ungraded examples is an error."""
  _check_pairs(completions, examples)
  ungraded = [e.get("grader") == "none" for e in examples]
  if all(ungraded):
    return None
  if any(ungraded):
    raise ValueError("Some examples have grader 'none' and some do not: no accuracy is defined.")
  return np.array([graders.grade(e.get("grader", "numeric"), c, e)
                   for c, e in zip(completions, examples)], np.float64)


def accuracy(task, completions: Sequence[str], examples: Sequence[dict]) -> float:
  """Mean grade of `completions` against `examples` (`task`, a Task or a name, is checked)."""
  _check_task(task)
  scores = grades(completions, examples)
  if scores is None:
    raise ValueError("These examples are not graded (grader 'none'); use ROUGE or BLEU.")
  return float(scores.mean())


def mean_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """ROUGE-1/2/L F-measures (rouge-score, stemmed) averaged over (prediction, reference) pairs."""
  _check_pairs(predictions, references)
  scores = [graders.rouge(p, r) for p, r in zip(predictions, references)]
  return {k: float(np.mean([s[k] for s in scores])) for k in graders.ROUGE_TYPES}


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]]
         ) -> tuple[float, str]:
  """sacrebleu corpus BLEU in [0, 100] and its signature string.

  `references[i]` is one reference string or a list of them (the same number for every i).
  """
  import sacrebleu

  _check_pairs(predictions, references)
  refs = [[r] if isinstance(r, str) else list(r) for r in references]
  if len({len(r) for r in refs}) != 1:
    raise ValueError("Every prediction needs the same number of references for sacrebleu.")
  streams = [list(stream) for stream in zip(*refs)]  # sacrebleu wants one list per reference
  metric = sacrebleu.BLEU()
  score = metric.corpus_score(list(predictions), streams)
  return float(score.score), str(metric.get_signature())


def _is_text_task(examples: Sequence[dict]) -> bool:
  return all(e.get("grader") in _TEXT_GRADERS for e in examples)


def example_scores(task, completions: Sequence[str], examples: Sequence[dict]
                   ) -> dict[str, np.ndarray]:
  """Per-example scores, for bootstrap confidence intervals and paired comparisons.

  "accuracy": the grade of each example (0/1 for numeric and exact graders), when graded;
  for text tasks (graders rouge, bleu, none) also "rouge1", "rouge2", "rougeL" per example and
  "bleu": sentence BLEU (sacrebleu's sentence_bleu, exp smoothing). The mean of sentence BLEU
  is not corpus BLEU: to bootstrap corpus BLEU, resample examples and call `bleu` on each draw.
  """
  _check_task(task)
  out = {}
  scores = grades(completions, examples)
  if scores is not None:
    out["accuracy"] = scores
  if _is_text_task(examples):
    rouge = [graders.rouge(c, e["response"]) for c, e in zip(completions, examples)]
    for k in graders.ROUGE_TYPES:
      out[k] = np.array([r[k] for r in rouge])
    out["bleu"] = np.array([graders.sentence_bleu(c, e["response"])
                            for c, e in zip(completions, examples)])
  return out


def task_metrics(task, completions: Sequence[str], examples: Sequence[dict]) -> dict:
  """Corpus-level text metrics of a task.

  "accuracy" when the examples are graded; for text tasks (every example graded by rouge,
  bleu or none) also the mean "rouge1", "rouge2", "rougeL", corpus "bleu" and
  "bleu_signature" (a string: sacrebleu's record of how BLEU was computed).
  """
  _check_task(task)
  out: dict = {}
  scores = grades(completions, examples)
  if scores is not None:
    out["accuracy"] = float(scores.mean())
  if _is_text_task(examples):
    references = [e["response"] for e in examples]
    out.update(mean_rouge(completions, references))
    out["bleu"], out["bleu_signature"] = bleu(completions, references)
  return out


# -- diversity and likelihood ------------------------------------------------------------------
def _ngrams(tokens: Sequence, n: int) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


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
