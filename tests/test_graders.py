"""Graders: answer extraction and per-example scores (gkd.data.graders)."""

import pytest

from gkd.data import graders


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
  assert graders.extract_answer(text) == expected


def test_answers_match_numerically():
  assert graders.answers_match("18.0", "18")
  assert graders.answers_match("3.50", "3.5")
  assert graders.answers_match("1,000", "1000")
  assert not graders.answers_match("19", "18")
  assert not graders.answers_match(None, "18")
  assert graders.answers_match(" yes ", "yes")  # non-numbers: stripped strings


def test_grade_by_name():
  example = {"prompt": "2+2=", "response": "2+2=4. Answer: 4", "answer": "4"}
  assert graders.grade("numeric", "so Answer: 4.0", example) == 1.0
  assert graders.grade("numeric", "Answer: 5", example) == 0.0
  assert graders.grade("exact", "  4 ", example) == 1.0
  assert graders.grade("exact", "4.0", example) == 0.0
  assert graders.grade("rouge", example["response"], example) == pytest.approx(1.0)
  assert graders.grade("bleu", example["response"], example) == pytest.approx(1.0)
  assert graders.grade("bleu", "", example) == 0.0
  with pytest.raises(ValueError, match="no grade"):
    graders.grade("none", "x", example)
  with pytest.raises(ValueError, match="Unknown grader 'fuzzy'"):
    graders.grade("fuzzy", "x", example)


def test_rouge_uses_the_porter_stemmer():
  # Stemmed: "cats" -> "cat", "running" and "runs" -> "run": every unigram matches. Without
  # stemming only "the" would.
  assert graders.rouge("the cats running", "the cat runs")["rouge1"] == pytest.approx(1.0)
