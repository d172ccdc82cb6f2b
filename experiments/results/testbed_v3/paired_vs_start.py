"""Each method of a sweep minus the SFT student it starts from, paired on the 2,000 test
examples (the start is one fixed model, so only the methods' seeds vary), and the share of the
SFT-student-to-teacher gap closed; then, where the sweep has both, the two label-free methods on
the 20,000 prompts against each other, paired by seed and example. Reads the committed results
only; the arguments are the sweep and the stages its runs started from (teacher A: stages,
teacher B: stages_b):
  PYTHONPATH=. python experiments/results/testbed_v3/paired_vs_start.py > experiments/results/testbed_v3/paired_vs_start.txt
  PYTHONPATH=. python experiments/results/testbed_v3/paired_vs_start.py beyond stages_b > experiments/results/testbed_v3/beyond/paired_vs_start.txt
"""

import os
import re
import sys

import numpy as np

from gkd.eval import stats
from gkd.rundir import read_examples, read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
SWEEP = sys.argv[1] if len(sys.argv) > 1 else "prompts"
STAGES = sys.argv[2] if len(sys.argv) > 2 else "stages"


def accuracy(rows):
  return np.array([r["accuracy"] for r in sorted(rows, key=lambda r: r["example_id"])])


start = accuracy(read_examples(f"{HERE}/{STAGES}/student_n2000_test"))
teacher = accuracy(read_examples(f"{HERE}/{STAGES}/teacher_test"))
gap = teacher.mean() - start.mean()
print(f"SFT student (every run's start): {stats.mean_ci(start)}")
print(f"teacher: {stats.mean_ci(teacher)}; gap {gap:.4f}")
methods = {}
for name in sorted(r["point"] for r in read_jsonl(f"{HERE}/{SWEEP}/results.jsonl")):  # seed order
  rows = read_examples(f"{HERE}/{SWEEP}/points/{name}")
  if rows:
    methods.setdefault(re.sub(r",seed=\d+$", "", name), []).append(accuracy(rows))
for method, runs in sorted(methods.items()):
  a = np.stack(runs)
  d = stats.paired_difference_ci(a, np.tile(start, (len(runs), 1)))
  print(f"{method}: {len(runs)} seeds, accuracy {stats.mean_ci(a)}; minus the start {d}; "
        f"gap closed {d.mean / gap:.2f}")

on_policy = "divergence=generalized_jsd,beta=0.9,student=1.0,dataset=0.0,num_train_examples=20000"
seq_kd = "divergence=forward_kl,dataset=0.0,teacher=1.0,student=0.0,num_train_examples=20000"
if on_policy in methods and seq_kd in methods:
  n = min(len(methods[on_policy]), len(methods[seq_kd]))
  d = stats.paired_difference_ci(np.stack(methods[on_policy][:n]), np.stack(methods[seq_kd][:n]))
  print(f"on-policy JSD(0.9) minus SeqKD, both on 20,000 prompts ({n} seeds): {d}")
