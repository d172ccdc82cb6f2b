"""Text metrics: the libraries' published examples, hand-computed small cases, invariants."""

import math

import numpy as np
import pytest

from gkd.data import graders
from gkd.eval import metrics


def _f(p, r):
  return 2 * p * r / (p + r)


def test_rouge_readme_example_hand_computed():
  # rouge-score's README example, (target, prediction). Stemmed tokens:
  # target  the quick brown fox jump over the lazi dog   (9)
  # predict the quick brown dog jump on the log          (8)
  # unigram overlap 6 (the x2, quick, brown, dog, jump); bigrams: the-quick, quick-brown (2 of
  # 7 and 8); LCS "the quick brown jump the" = 5.
  s = graders.rouge("The quick brown dog jumps on the log.",
                    "The quick brown fox jumps over the lazy dog")
  assert s["rouge1"] == pytest.approx(_f(6 / 8, 6 / 9))
  assert s["rouge2"] == pytest.approx(_f(2 / 7, 2 / 8))
  assert s["rougeL"] == pytest.approx(_f(5 / 8, 5 / 9))


def test_rouge_hand_computed():
  # unigrams: 5 of 6 shared; bigrams: the-cat, on-the, the-mat (3 of 5); LCS "the cat on the mat".
  s = graders.rouge("The cat sat on the mat.", "the cat is on the mat")
  assert s == pytest.approx({"rouge1": 5 / 6, "rouge2": 3 / 5, "rougeL": 5 / 6})
  # Asymmetric lengths: P = 2/2, R = 2/4 -> F1 = 2/3; LCS 2 -> same.
  s = graders.rouge("cat mat", "the cat the mat")
  assert s == pytest.approx({"rouge1": 2 / 3, "rouge2": 0.0, "rougeL": 2 / 3})
  assert graders.rouge("", "anything") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
  mean = metrics.mean_rouge(["The cat sat on the mat.", "cat mat"],
                            ["the cat is on the mat", "the cat the mat"])
  assert mean["rouge1"] == pytest.approx((5 / 6 + 2 / 3) / 2)


def test_sacrebleu_readme_example():
  # sacrebleu's README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 ...).
  hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
  refs1 = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]
  refs2 = ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]
  score, signature = metrics.bleu(hyps, [list(r) for r in zip(refs1, refs2)])
  assert round(score, 2) == 48.53
  assert signature.startswith("nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_bleu_hand_computed():
  same, _ = metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
  assert same == pytest.approx(100)
  # p1..p4 = 5/6, 3/5, 2/4, 1/3; equal lengths -> BP 1.
  got, _ = metrics.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
  assert got == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
  # All precisions 1, c=4 < r=6 -> BP = exp(1 - 6/4).
  got, _ = metrics.bleu(["the cat sat on"], ["the cat sat on the mat"])
  assert got == pytest.approx(100 * math.exp(-0.5))
  # Corpus level: n-gram counts are pooled over sentences, not averaged:
  # matches 4+3, 3+2, 2+1, 1+0 of totals 8, 6, 4, 2.
  got, _ = metrics.bleu(["a b c d", "e f g h"], ["a b c d", "e f g x"])
  assert got == pytest.approx(100 * (7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25)
  with pytest.raises(ValueError, match="completions"):
    metrics.bleu(["a"], ["a", "b"])


def _text_examples(grader):
  refs = ["the cat sat on the mat", "a quick brown fox", "hello there world"]
  return [{"prompt": "p", "response": r, "answer": "", "grader": grader} for r in refs]


def test_example_scores_match_the_corpus_metrics():
  completions = ["the cat sat on a mat", "a quick fox", "nothing alike"]
  examples = _text_examples("rouge")
  per = metrics.example_scores("files", completions, examples)
  corpus = metrics.task_metrics("files", completions, examples)
  assert set(per) == {"accuracy", "rouge1", "rouge2", "rougeL", "bleu"}
  assert all(v.shape == (3,) for v in per.values())
  for k in ("rouge1", "rouge2", "rougeL"):
    assert corpus[k] == pytest.approx(per[k].mean())
  np.testing.assert_allclose(per["accuracy"], per["rougeL"])  # the rouge grader is ROUGE-L
  references = [e["response"] for e in examples]
  assert per["bleu"][0] == pytest.approx(graders.sentence_bleu(completions[0], references[0]))
  assert corpus["bleu"] == pytest.approx(metrics.bleu(completions, references)[0])
  assert corpus["bleu_signature"].startswith("nrefs:1|")


def test_ungraded_examples_get_text_metrics_only():
  examples = _text_examples("none")
  out = metrics.task_metrics("files", [e["response"] for e in examples], examples)
  assert "accuracy" not in out and out["rougeL"] == pytest.approx(1.0)
  assert out["bleu"] == pytest.approx(100.0)
  with pytest.raises(ValueError, match="not graded"):
    metrics.accuracy("files", ["x"] * 3, examples)
  with pytest.raises(ValueError, match="some do not"):
    metrics.task_metrics("files", ["x"] * 2, [examples[0], dict(examples[1], grader="exact")])


def test_accuracy_and_per_example_grades():
  examples = [{"prompt": f"{a}+{a}=", "response": f"{a}+{a}={2 * a}. Answer: {2 * a}",
               "answer": str(2 * a), "grader": "numeric"} for a in (1, 2, 3)]
  completions = ["Answer: 2", "Answer: 5", "#### 6"]
  assert metrics.accuracy("arithmetic", completions, examples) == pytest.approx(2 / 3)
  per = metrics.example_scores("arithmetic", completions, examples)
  assert set(per) == {"accuracy"}
  np.testing.assert_array_equal(per["accuracy"], [1.0, 0.0, 1.0])
  assert metrics.task_metrics("arithmetic", completions, examples) == {
      "accuracy": pytest.approx(2 / 3)}
  with pytest.raises(ValueError, match="completions"):
    metrics.accuracy("arithmetic", ["Answer: 2"], examples)
  with pytest.raises(ValueError, match="Unknown task"):
    metrics.task_metrics("arithmetics", completions, examples)


def test_distinct_n():
  assert metrics.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
  assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
  assert metrics.distinct_n([[1, 2, 3], np.array([1, 2, 4])], 2) == pytest.approx(3 / 4)
  assert metrics.distinct_n(["a"], 2) == 0.0


def test_perplexity():
  assert metrics.perplexity(10 * math.log(4), 10) == pytest.approx(4)
  with pytest.raises(ValueError):
    metrics.perplexity(1.0, 0)
