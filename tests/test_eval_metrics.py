"""Text metrics against values worked out by hand."""

import json
import math
import os

import numpy as np
import pytest

from gkd.eval import metrics


@pytest.mark.parametrize("text, expected", [
    ("so 5+3=8\n#### 1,234", "1234"),
    ("7+5=12, 12-3=9. Answer: 9", "9"),
    ("Answer: -4 and then junk 77", "-4"),
    ("The answer is 42.", "42"),
    ("#### 3 then #### 5", "5"),
    ("12-3", "3"),  # binary minus is not a sign
    ("x = 3.50", "3.50"),
    ("no number here", None),
    ("#### nothing", None),
])
def test_extract_answer(text, expected):
  assert metrics.extract_answer(text) == expected


def test_answers_match_numerically():
  assert metrics.answers_match("18.0", "18")
  assert metrics.answers_match("3.50", "3.5")
  assert not metrics.answers_match("19", "18")
  assert not metrics.answers_match(None, "18")


def test_accuracy_uses_the_task_grader():
  examples = [{"prompt": f"{a}+{a}=", "response": f"{a}+{a}={2 * a}. Answer: {2 * a}",
               "answer": str(2 * a), "grader": "numeric"} for a in (1, 2)]
  assert metrics.accuracy("arithmetic", ["Answer: 2", "Answer: 5"], examples) == 0.5
  with pytest.raises(ValueError, match="completions"):
    metrics.accuracy("arithmetic", ["Answer: 2"], examples)


def test_rouge_hand_computed():
  # unigrams: 5 of 6 shared; bigrams: the-cat, on-the, the-mat (3 of 5); LCS "the cat on the mat".
  s = metrics.rouge("The cat sat on the mat.", "the cat is on the mat")
  assert s["rouge1"] == pytest.approx(5 / 6)
  assert s["rouge2"] == pytest.approx(3 / 5)
  assert s["rougeL"] == pytest.approx(5 / 6)
  # Asymmetric lengths: P = 2/2, R = 2/4 -> F1 = 2/3; LCS 2 -> same.
  s = metrics.rouge("cat mat", "the cat the mat")
  assert s["rouge1"] == pytest.approx(2 / 3) and s["rougeL"] == pytest.approx(2 / 3)
  assert s["rouge2"] == 0.0
  assert metrics.rouge("", "anything") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_bleu_hand_computed():
  assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
  # p1..p4 = 5/6, 3/5, 2/4, 1/3; equal lengths -> BP 1.
  got = metrics.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
  assert got == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
  # All precisions 1, c=4 < r=6 -> BP = exp(1 - 6/4).
  assert metrics.bleu(["the cat sat on"], ["the cat sat on the mat"]) == pytest.approx(
      100 * math.exp(-0.5))
  # Papineni et al.'s clipping example, unigrams: "the" clipped to 2 of 7; closest ref length 7.
  refs = [["the cat is on the mat", "there is a cat on the mat"]]
  assert metrics.bleu(["the the the the the the the"], refs, max_order=1) == pytest.approx(
      100 * 2 / 7)
  # Corpus level: counts are pooled, not averaged (p1 = 3/4 with 1 + 2 matches).
  assert metrics.bleu(["a b", "c x"], ["a b", "c d"], max_order=1) == pytest.approx(75)
  assert metrics.bleu(["the the the the"], ["the cat"]) == 0.0  # no 2-gram match, no smoothing


def test_distinct_n():
  assert metrics.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
  assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
  assert metrics.distinct_n([[1, 2, 3], np.array([1, 2, 4])], 2) == pytest.approx(3 / 4)
  assert metrics.distinct_n(["a"], 2) == 0.0


def test_perplexity():
  assert metrics.perplexity(10 * math.log(4), 10) == pytest.approx(4)
  with pytest.raises(ValueError):
    metrics.perplexity(1.0, 0)


def test_write_results_is_atomic(tmp_path):
  path = str(tmp_path / "out" / "results.json")
  metrics.write_results(path, {"acc": np.float32(0.5), "n": np.int64(3)})
  assert json.load(open(path)) == {"acc": 0.5, "n": 3}
  with pytest.raises(TypeError):
    metrics.write_results(path, {"bad": object()})
  assert json.load(open(path)) == {"acc": 0.5, "n": 3}  # the old file is intact
  assert os.listdir(tmp_path / "out") == ["results.json"]  # no temp file left behind
