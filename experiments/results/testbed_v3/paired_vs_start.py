"""Each prompts-sweep method minus the SFT student it starts from, paired on the 2,000 test
examples (the start is one fixed model, so only the methods' seeds vary), and the share of the
SFT-student-to-teacher gap closed. Reads the committed results only:
  PYTHONPATH=. python experiments/results/testbed_v3/paired_vs_start.py > experiments/results/testbed_v3/paired_vs_start.txt
"""

import glob
import os
import re

import numpy as np

from gkd.eval import stats
from gkd.rundir import read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))


def accuracy(path):
  return np.array([r["accuracy"] for r in sorted(read_jsonl(path), key=lambda r: r["example_id"])])


start = accuracy(f"{HERE}/stages/student_n2000_test/eval_examples.jsonl")
teacher = accuracy(f"{HERE}/stages/teacher_test/eval_examples.jsonl")
gap = teacher.mean() - start.mean()
print(f"SFT student (every run's start): {stats.mean_ci(start)}")
print(f"teacher: {stats.mean_ci(teacher)}; gap {gap:.4f}")
methods = {}
for path in glob.glob(f"{HERE}/prompts/points/*/eval_examples.jsonl"):
  name = os.path.basename(os.path.dirname(path))
  methods.setdefault(re.sub(r",seed=\d+$", "", name), []).append(accuracy(path))
for method, runs in sorted(methods.items()):
  a = np.stack(runs)
  d = stats.paired_difference_ci(a, np.tile(start, (len(runs), 1)))
  print(f"{method}: {len(runs)} seeds, accuracy {stats.mean_ci(a)}; minus the start {d}; "
        f"gap closed {d.mean / gap:.2f}")
