"""arm 1's exposure analysis (experiments/results/arm1_chain/exposure.py): the plan's H3 figure,
the pooled growth of the first-error hazard, against a count by hand."""

import importlib.util
import os

import numpy as np

from tests import helpers

PATH = os.path.join(helpers.ROOT, "experiments", "results", "arm1_chain", "exposure.py")


def load():
  spec = importlib.util.spec_from_file_location("exposure", PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def method(bad, steps, example):
  return {"bad": np.array(bad), "steps": np.array(steps), "example": np.array(example)}


def test_hazard_growth_pools_the_groups_as_counted_by_hand():
  exposure = load()
  # Four 5-term problems (steps 0..4), two seeds each for one method of each group.
  # On-policy: first errors at steps 0, 3, none, none | 1, none, 4, none.
  on = method([0, 3, -1, -1, 1, -1, 4, -1], [5] * 8, [0, 1, 2, 3] * 2)
  # Off-policy: first errors at steps 2, 2, 0, none | none, 3, none, none.
  off = method([2, 2, 0, -1, -1, 3, -1, -1], [5] * 8, [0, 1, 2, 3] * 2)
  per_method = {"gkd_jsd0.9": on, "seq_kd": off}

  def by_hand(m):
    h0 = np.mean(m["bad"] == 0)  # every solution reaches step 0
    first, reached = 0, 0
    for b in m["bad"]:
      for k in range(2, 5):
        if b < 0 or b >= k:
          reached += 1
          first += b == k
    return first / reached - h0

  out = exposure.hazard_growth(per_method, num_resamples=200)
  np.testing.assert_allclose(out["on-policy"][0], by_hand(on))
  np.testing.assert_allclose(out["off-policy"][0], by_hand(off))
  np.testing.assert_allclose(out["on-policy minus off-policy"][0], by_hand(on) - by_hand(off))
  # The same problems ten times over (40 examples): the same figures, inside their intervals.
  ten = {k: method(np.tile(m["bad"], 10), np.tile(m["steps"], 10),
                   np.concatenate([m["example"] + 4 * i for i in range(10)]))
         for k, m in per_method.items()}
  for (value, low, high), again in zip(out.values(), exposure.hazard_growth(ten).values()):
    np.testing.assert_allclose(again[0], value)
    assert again[1] < value < again[2]


def test_identical_groups_differ_by_exactly_zero_in_every_resample():
  exposure = load()
  m = method([0, 3, -1, 2, 1, -1], [5, 4, 6, 5, 4, 6], [0, 1, 2, 0, 1, 2])
  out = exposure.hazard_growth({"gkd_rkl": m, "supervised_kd": m}, num_resamples=100)
  assert out["on-policy minus off-policy"] == (0.0, 0.0, 0.0)
