"""The minimum detectable effect of the after_gkd comparison (3 seeds × 2,000 test examples),
from committed results only: the paired bootstrap standard error of two on-policy methods that
differ in their loss, measured on the prompts_b sweep (teacher B, 20,000 prompts): JSD(0.9)
against SeqKD, on seeds 0-2. MDE = 2.80 × SE (80% power, two-sided 5%).
  PYTHONPATH=. python experiments/results/testbed_v3/after_gkd/mde.py > experiments/results/testbed_v3/after_gkd/mde.txt
"""

import os

import numpy as np

from gkd.eval import stats
from gkd.rundir import read_examples

HERE = os.path.dirname(os.path.abspath(__file__))
POINTS = os.path.join(HERE, "..", "prompts_b", "points")
JSD = "divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0,num_train_examples=20000"
SEQKD = "divergence=forward_kl,dataset=0.0,teacher=1.0,student=0.0,num_train_examples=20000"


def accuracy(name, seed):
  rows = read_examples(os.path.join(POINTS, f"{name},seed={seed}"))  # own rows or packed table
  return np.array([r["accuracy"] for r in sorted(rows, key=lambda r: r["example_id"])])


for seeds in (range(3), range(5)):
  a = np.stack([accuracy(JSD, s) for s in seeds])
  b = np.stack([accuracy(SEQKD, s) for s in seeds])
  ci = stats.paired_difference_ci(a, b)
  se = (ci.high - ci.low) / (2 * 1.96)
  print(f"{len(seeds)} seeds: JSD(0.9) − SeqKD {ci}; discordance {np.mean(a != b):.3f}; "
        f"paired SE {100 * se:.2f} points; MDE (80% power, 5% two-sided) {100 * 2.80 * se:.1f} points")
