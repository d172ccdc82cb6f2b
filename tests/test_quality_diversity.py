"""experiments/quality_diversity.py: its H3 statistics against closed forms (plan.md of arm 2,
fourth amendment), and its sampling pass on tiny random models, with the invariants of its rows."""

import importlib.util
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def qd():
  path = os.path.join(ROOT, "experiments", "quality_diversity.py")
  spec = importlib.util.spec_from_file_location("quality_diversity", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def rows(points, **info):
  """One model's rows from (temperature, distinct-2, quality) points."""
  return [{"temperature": t, "distinct_2": d, "quality": q, **info} for t, d, q in points]


def test_gap_is_the_mean_vertical_distance_over_the_overlap(qd):
  a = rows([(0.5, 0.2, 0.5), (1.0, 0.6, 0.9)])
  b = rows([(0.5, 0.4, 0.3), (1.0, 0.8, 0.3)])
  # On the overlap [0.4, 0.6], a rises linearly from 0.7 to 0.9 (mean 0.8); b stays at 0.3.
  assert qd.gap_at_equal_diversity(a, b) == pytest.approx(0.5)
  assert qd.gap_at_equal_diversity(b, a) == pytest.approx(-0.5)
  # Points are joined in the order of diversity, whatever the temperatures' order.
  shuffled = rows([(1.0, 0.6, 0.9), (0.5, 0.2, 0.5)])
  assert qd.gap_at_equal_diversity(shuffled, b) == pytest.approx(0.5)


def test_gap_is_undefined_without_overlap(qd):
  a = rows([(0.5, 0.1, 0.5), (1.0, 0.3, 0.9)])
  b = rows([(0.5, 0.32, 0.3), (1.0, 0.8, 0.3)])
  assert qd.gap_at_equal_diversity(a, b) is None  # overlap 0.30–0.32 < 0.05


def test_nll_slope_ignores_thin_positions(qd):
  positions = np.arange(10)
  nll = 2.0 + 0.1 * positions
  nll[8:] = 50.0  # a handful of long samples: left out
  row = {"teacher_nll_by_position": nll.tolist(), "tokens_by_position": [100] * 8 + [3, 1]}
  assert qd.nll_slope(row) == pytest.approx(0.1)


def test_verdict_needs_every_seed(qd):
  positive = lambda v: v > 0
  assert qd.verdict([0.1, 0.2, 0.01], better=positive) == "supported"
  assert qd.verdict([-0.1, 0.0, -0.3], better=positive) == "against"
  assert qd.verdict([0.1, -0.2, 0.3], better=positive) == "inconclusive"
  assert qd.verdict([0.1, None, 0.3], better=positive) == "undefined"
  assert qd.verdict([], better=positive) == "undefined"


def test_h3_report_pairs_seeds_and_names_the_verdicts(qd):
  def model(method, seed, lift, slope):
    out = rows([(t, 0.2 + 0.2 * i, 0.5 - 0.1 * i + lift) for i, t in enumerate((0.25, 0.5, 1.0, 1.5))],
               method=method, seed=seed)
    for r in out:
      if r["temperature"] == 1.0:
        r.update(teacher_nll_by_position=[1 + slope * p for p in range(5)],
                 tokens_by_position=[50] * 5)
    return out
  data = []
  for seed in (0, 1, 2):
    data += model("gkd_jsd0.9", seed, 0.1, 0.01)
    data += model("seq_kd", seed, 0.0, 0.02)
    data += model("supervised_kd", seed, 0.1 if seed == 1 else 0.2, 0.005)
  table = qd.h3_report(data, ["gkd_jsd0.9"], ["seq_kd", "supervised_kd"], "gkd_jsd0.9")
  lines = table.strip().splitlines()
  assert len(lines) == 4 and all(line.count("|") == 8 for line in lines)
  seq, sup = lines[2], lines[3]
  assert "| **gkd_jsd0.9** | seq_kd | 0,1,2 | +0.1000, +0.1000, +0.1000 | supported |" in seq
  assert seq.endswith("-0.01000, -0.01000, -0.01000 | supported |")
  assert "-0.1000, +0.0000, -0.1000 | against |" in sup
  assert sup.endswith("+0.00500, +0.00500, +0.00500 | against |")


def test_measure_on_tiny_models_keeps_its_invariants(qd, tmp_path, monkeypatch):
  monkeypatch.setenv("GKD_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.syspath_prepend(ROOT)
  from configs import testbed
  from gkd.eval import plots
  from gkd.teachers.build import build_models
  c = testbed.get_config("stage=gkd,runlocal=true")
  c.mesh.num_devices = 1
  tokenizer, teacher, student = build_models(c)
  out = qd.measure(c, tokenizer, teacher, student, num_prompts=6, samples=2)
  assert [r["temperature"] for r in out] == list(qd.TEMPS)
  for r in out:
    assert r["num_prompts"] == 6 and 0 <= r["quality"] <= 1 and 0 <= r["repetition"] <= 1
    assert 0.5 <= r["unique"] <= 1  # at least one of a prompt's 2 samples is distinct
  t1 = next(r for r in out if r["temperature"] == 1.0)
  counts = np.array(t1["tokens_by_position"])
  assert len(counts) == c.data.max_response_len and counts[0] == 6 * 2
  assert np.all(np.diff(counts) <= 0)  # a sample covers its positions from the first on
  nll = np.array(t1["teacher_nll_by_position"])
  assert np.all(nll[counts > 0] > 0) and np.all(nll[counts == 0] == 0)
  np.testing.assert_allclose(t1["teacher_nll"], (nll * counts).sum() / counts.sum(), rtol=1e-6)
  models = [{**r, "model": "x seed 0", "method": "x", "seed": 0, "student_fraction": 1.0}
            for r in out]
  plots.quality_diversity(models + [{**r, "model": "teacher", "method": "teacher"} for r in out],
                          save_to=str(tmp_path))
  assert os.path.getsize(tmp_path / "quality_diversity.png") > 10_000
