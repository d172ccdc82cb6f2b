"""The after_gkd plan's comparisons (plan.md beside this file) from the committed results:
sampled-token RKL minus full RKL, each method minus student B's own test accuracy (its start,
one fixed model), with nominal 95% and Bonferroni (1 - 0.05/4) intervals, paired by seed and
test example; the reproduction of the baseline's seed 0 at this sweep's commit; and each OPSD
run's training loss, which shows how it ended.
  PYTHONPATH=. python experiments/results/testbed_v3/after_gkd/compare.py > experiments/results/testbed_v3/after_gkd/compare.txt
"""

import os
import re

import numpy as np

from gkd.eval import stats
from gkd.rundir import read_examples, read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
STAGES = os.path.join(HERE, "..", "stages_b")
BONFERRONI = 1 - 0.05 / 4  # four comparisons on one test split (plan.md)


def accuracy(rows):
  return np.array([r["accuracy"] for r in sorted(rows, key=lambda r: r["example_id"])])


def both(a, b) -> str:
  nominal = stats.paired_difference_ci(a, b)
  strict = stats.paired_difference_ci(a, b, confidence=BONFERRONI)
  return (f"{nominal.mean:+.4f} [{nominal.low:+.4f}, {nominal.high:+.4f}] "
          f"(Bonferroni [{strict.low:+.4f}, {strict.high:+.4f}])")


methods = {}
for name in sorted(r["point"] for r in read_jsonl(f"{HERE}/results.jsonl")):  # seed order
  methods.setdefault(re.sub(r",seed=\d+$", "", name), []).append(
      accuracy(read_examples(f"{HERE}/points/{name}")))
labels = {"generalized_jsd,beta=0.9,student=1.0,dataset=0.0,num_train_examples=20000": "JSD(0.9)",
          "reverse_kl,student=1.0,dataset=0.0,num_train_examples=20000": "RKL",
          "reverse_kl,student=1.0,dataset=0.0,num_train_examples=20000,estimator=sampled_token":
              "RKL + sampled-token",
          "generalized_jsd,beta=0.9,student=1.0,dataset=0.0,num_train_examples=20000,source=self":
              "JSD(0.9) + OPSD"}
runs = {labels[k.removeprefix("divergence=")]: np.stack(v) for k, v in methods.items()}
start = accuracy(read_examples(os.path.join(STAGES, "student_n2000_test")))
print(f"student B (every run's start): {stats.mean_ci(start)}")
for label, a in runs.items():
  print(f"{label}: {len(a)} seeds, accuracy {stats.mean_ci(a)}; minus the start "
        f"{both(a, np.tile(start, (len(a), 1)))}")
print(f"RKL + sampled-token minus RKL: {both(runs['RKL + sampled-token'], runs['RKL'])}")
repro = os.path.join(HERE, "repro", "divergence=" + next(
    k for k, v in labels.items() if v == "JSD(0.9)") + ",seed=0")
if os.path.isdir(repro):
  rerun = accuracy(read_examples(repro))
  print(f"baseline seed 0 rerun at this sweep's commit: accuracy {rerun.mean():.4f}; the copied "
        f"point's {runs['JSD(0.9)'][0].mean():.4f}; examples that differ: "
        f"{int(np.sum(rerun != runs['JSD(0.9)'][0]))}")
for name in sorted(n for n in os.listdir(f"{HERE}/points") if "source=self" in n):
  rows = [r for r in read_jsonl(f"{HERE}/points/{name}/metrics.jsonl") if "loss" in r]
  print(f"{name}: train loss at steps " + ", ".join(f"{r['step']}: {r['loss']:.4f}"
                                                     for r in rows[:4]) + f", ... {rows[-1]['step']}: {rows[-1]['loss']:.4f}")
