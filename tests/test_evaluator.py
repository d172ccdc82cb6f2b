"""The evaluator works from parameters alone (no training run), with invariants of its metrics."""

import os
import sys

import numpy as np
import pytest
from flax import nnx

from gkd import sharding, teachers
from gkd.eval.evaluator import Evaluator
from gkd.teachers.build import build_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  os.environ["GKD_DATA_DIR"] = str(tmp_path_factory.getbasetemp() / "tfds")
  sys.path.insert(0, ROOT)
  from configs import testbed
  c = testbed.get_config("stage=gkd,runlocal=true")
  c.mesh.num_devices = 1
  tokenizer, teacher, student = build_models(c)
  mesh = sharding.make_mesh(c)
  return c, tokenizer, mesh, nnx.split(teacher), nnx.split(student)


def test_evaluates_parameters_without_a_run(setup):
  c, tokenizer, mesh, (tg, tp), (sg, sp) = setup
  result = Evaluator(c, tokenizer, mesh, student_graph=sg, teacher=teachers.Live(tg))(sp, tp)
  m = result.metrics
  assert m["num_examples"] == c.eval.num_examples == len(result.examples)
  assert sorted(r["example_id"] for r in result.examples) == list(range(c.eval.num_examples))
  for k in ("accuracy", "forward_kl", "reverse_kl", "nll", "teacher_nll", "teacher_logprob_of_samples"):
    assert np.isfinite(m[k]), k
  assert m["forward_kl"] > 0 and m["reverse_kl"] > 0  # two different random models
  # Per-example values add up to the corpus metrics (accuracy: a plain mean over examples).
  np.testing.assert_allclose(np.mean([r["accuracy"] for r in result.examples]), m["accuracy"])
  assert all(np.isfinite(r["forward_kl"]) and isinstance(r["completion"], str) for r in result.examples)


def test_a_student_equal_to_its_teacher_has_zero_kl(setup):
  c, tokenizer, mesh, (tg, tp), _ = setup
  m = Evaluator(c, tokenizer, mesh, student_graph=tg, teacher=teachers.Live(tg))(tp, tp).metrics
  assert abs(m["forward_kl"]) < 1e-5 and abs(m["reverse_kl"]) < 1e-5
  np.testing.assert_allclose(m["nll"], m["teacher_nll"], rtol=1e-6)


def test_student_only_evaluation(setup):
  c, tokenizer, mesh, _, (sg, sp) = setup
  result = Evaluator(c, tokenizer, mesh, student_graph=sg)(sp)
  assert "forward_kl" not in result.metrics and np.isfinite(result.metrics["nll"])
  assert all("forward_kl" not in r for r in result.examples)
