"""The minimum detectable effect of a paired accuracy comparison, from the v3 testbed's runs.

  python experiments/results/arm1_chain/mde.py > experiments/results/arm1_chain/mde.txt

For two methods evaluated on the same seeds and test examples, the paired bootstrap CI
(gkd.eval.stats, seeds × examples resampled jointly) has a standard error SE = half-width/1.96.
The smallest true difference a design detects with 80% power at a two-sided 5% level is
MDE = (1.96 + 0.84)·SE. SE depends on how often the two methods disagree on an example
(the discordance δ: each disagreement is a ±1 in the difference) and on how seeds and examples
cluster (the design effect: the bootstrap SE over the SE of independent draws). We measure both on
v3's `paper` sweep (5 seeds × 2,000 test examples, per-example files), then give the MDE for the
designs planned, over a range of δ, since a new task's δ is not known before its runs.
"""

import os

import numpy as np

from gkd import rundir
from gkd.eval import stats

HERE = os.path.dirname(os.path.abspath(__file__))
V3 = os.path.join(HERE, "..", "testbed_v3", "paper", "points")
Z = stats.Z_95 + stats.Z_POWER_80  # two-sided 5% level, 80% power
PAIRS = {  # v3 comparisons of on-policy against off-policy, by point-name prefix
    "on-policy JSD(0.9) - SeqKD": ("divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0",
                                   "divergence=forward_kl,dataset=0.0,teacher=1.0,student=0.0"),
    "on-policy JSD(0.9) - supervised KD": (
        "divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0",
        "divergence=forward_kl,student=0.0,dataset=1.0"),
    "on-policy RKL - SeqKD": ("divergence=reverse_kl,student=1.0,dataset=0.0",
                              "divergence=forward_kl,dataset=0.0,teacher=1.0,student=0.0"),
}
DESIGNS = {"arm 1: 5 seeds x 2,000 test examples": (5, 2000),
           "arm 2: 3 seeds x 1,000 test examples": (3, 1000)}


def accuracy(point: str) -> np.ndarray:
  """Per-example accuracy of one run, ordered by example id (its own rows or the packed table)."""
  rows = rundir.read_examples(os.path.join(V3, point))
  return np.array([r["accuracy"] for r in sorted(rows, key=lambda r: r["example_id"])])


def method(prefix: str, seeds=range(5)) -> np.ndarray:
  return np.stack([accuracy(f"{prefix},seed={s}") for s in seeds])


def main():
  print("v3 `paper` sweep, paired by seed and example (5 x 2,000):")
  effects = []
  for name, (a, b) in PAIRS.items():
    xa, xb = method(a), method(b)
    ci = stats.paired_difference_ci(xa, xb)
    d = xa - xb
    se = stats.standard_error(ci)
    naive = d.std() / np.sqrt(d.size)
    delta = float(np.mean(d != 0))
    effects.append(se / naive)
    print(f"  {name}: {ci.mean:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}], discordance {delta:.3f}, "
          f"SE {se:.4f}, design effect {se / naive:.2f}, MDE {stats.detectable_effect(ci):.4f}")
  deff = max(effects)
  print(f"\nMDE = {Z:.2f} x design effect ({deff:.2f}, the largest above) x sqrt(discordance / "
        "(seeds x examples)), in accuracy points:")
  deltas = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
  print("  design".ljust(44) + "".join(f"d={x:<7}" for x in deltas))
  for name, (s, n) in DESIGNS.items():
    row = [100 * Z * deff * np.sqrt(x / (s * n)) for x in deltas]
    print(f"  {name}".ljust(44) + "".join(f"{m:<9.2f}" for m in row))
  # A check of the table by simulation, with this project's bootstrap: cells disagree with
  # probability d, and a disagreement favours A with probability 1/2 + MDE/(2d), so that the true
  # difference is the table's MDE; at least 80% of the paired CIs should then exclude 0. (The
  # joint seed x example bootstrap is itself conservative: on independent cells its SE is about
  # 1.6 times the plain one, most of v3's design effect.)
  rng = np.random.default_rng(0)
  s, n = DESIGNS["arm 1: 5 seeds x 2,000 test examples"]
  for d in (0.1, 0.3):
    mde = Z * deff * np.sqrt(d / (s * n))
    found = 0
    for rep in range(200):
      both = rng.random((s, n)) < rng.beta(2, 2, size=n)  # concordant cells: shared difficulty
      split = rng.random((s, n)) < d
      a_wins = rng.random((s, n)) < 0.5 + mde / (2 * d)
      a = np.where(split, a_wins, both).astype(float)
      b = np.where(split, ~a_wins, both).astype(float)
      found += stats.paired_difference_ci(a, b, num_resamples=1000, seed=rep).low > 0
    print(f"  simulated check, d={d}: a true difference of {100 * mde:.2f} points is found by "
          f"{found / 200:.2f} of 200 simulated sweeps")

if __name__ == "__main__":
  main()
