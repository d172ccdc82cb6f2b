"""The chain_orders task: sums of signed terms solved in an order drawn per example, and the
step checker that tells a valid path from a slip."""

import itertools

import pytest

from gkd.data import arith, tasks

SMALL = dict(num_train=300, num_validation=50, num_test=100)


def test_signed_terms():
  assert arith.signed_terms("12+45-6") == [12, 45, -6]
  assert arith.signed_terms("-3-0+7") == [-3, 0, 7]
  for bad in ("12*3", "1+", "+", "1++2", ""):
    with pytest.raises(ValueError, match="Not a chain"):
      arith.signed_terms(bad)


def test_sum_in_order_by_hand():
  assert arith.sum_in_order([12, 45, -6], [2, 0, 1]) == (["-6+12=6", "6+45=51"], 51)
  assert arith.sum_in_order([3, -5, -8], [0, 1, 2]) == (["3-5=-2", "-2-8=-10"], -10)
  with pytest.raises(ValueError, match="not a permutation"):
    arith.sum_in_order([1, 2], [0, 0])


def test_every_order_checks_and_gives_the_sum():
  terms = [7, -12, 0, 5]
  for order in itertools.permutations(range(4)):
    steps, value = arith.sum_in_order(terms, list(order))
    assert value == sum(terms) == 0
    assert arith.first_bad_step(terms, f"{', '.join(steps)}. Answer: {value}") is None


@pytest.mark.parametrize("completion, bad", [
    ("-6+12=6, 6+45=51. Answer: 51", None),
    ("-6+12=7, 7+45=52. Answer: 52", 0),        # an arithmetic slip in the first step
    ("-6+12=6, 6+44=50. Answer: 50", 1),        # a term that is not in the sum
    ("-6+12=6, 6+12=18. Answer: 18", 1),        # a term used twice
    ("-6+12=6, 5+45=50. Answer: 50", 1),        # not continuing from the running total
    ("12+45=57, 57-6=51. Answer: 51", None),     # another valid order
    ("-6+12=6. Answer: 51", 1),                  # a term left out
    ("-6+12=6, 6+45=51. Answer: 50", 2),        # only the answer wrong
    ("-6+12=6, 6+45=51", 2),                     # no answer
    ("6+12=18, 18+45=63. Answer: 63", 0),       # a sign lost in the first term
    ("-6+12=6, garbage", 1),
    ("", 0),
])
def test_first_bad_step(completion, bad):
  assert arith.first_bad_step([12, 45, -6], completion) == bad


def test_task_examples_are_valid_solutions_in_varied_orders():
  task = tasks.get_task("chain_orders")
  examples = task.generate("train", **SMALL)
  assert len(examples) == 300
  in_written_order = 0
  for e in examples:
    terms = arith.signed_terms(e["prompt"][:-1])
    assert 4 <= len(terms) <= 6 and e["prompt"].endswith("=")
    assert arith.first_bad_step(terms, e["response"]) is None
    assert e["answer"] == str(sum(terms)) and task.grade(e["response"], e) == 1.0
    in_written_order += e["response"] == "{}. Answer: {}".format(
        ", ".join(arith.sum_in_order(terms, list(range(len(terms))))[0]), sum(terms))
  assert in_written_order < 30  # orders are drawn: few match the written one (1/24 to 1/720)
  left = task.generate("train", **SMALL, order="left")
  assert [e["prompt"] for e in left] == [e["prompt"] for e in examples]  # same problems
  for e in left:
    terms = arith.signed_terms(e["prompt"][:-1])
    assert e["response"].startswith(arith.sum_in_order(terms, list(range(len(terms))))[0][0])


def test_task_is_deterministic_and_splits_are_disjoint():
  task = tasks.get_task("chain_orders")
  a = {s: task.generate(s, **SMALL) for s in ("train", "validation", "test")}
  assert task.generate("validation", **SMALL) == a["validation"]
  prompts = [{e["prompt"] for e in a[s]} for s in a]
  assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
  # A split does not depend on another split's size (its own stream), nor on the train size.
  assert task.generate("test", **dict(SMALL, num_train=10)) == a["test"]


def test_task_parameters_fail_clearly():
  task = tasks.get_task("chain_orders")
  with pytest.raises(ValueError, match="order='shuffled'"):
    task.generate("train", **SMALL, order="shuffled")
  with pytest.raises(ValueError, match="min_terms <= max_terms"):
    task.generate("train", **SMALL, min_terms=5, max_terms=4)
  with pytest.raises(ValueError, match="has no parameters"):
    task.generate("train", terms=4)
