"""The SmolLM2 → 3-layer student comparison on the 256 test passages, from the committed files:
each run's metrics with 95% CIs over examples, each method minus SFT continued (paired by
example: all start from one SFT export and share the seed), and a few completions beside the
teacher's. Run from the repo root after collect.sh:
  PYTHONPATH=. python experiments/results/smollm2_shakespeare/compare.py > experiments/results/smollm2_shakespeare/compare.txt
"""

import os
import re

import numpy as np

from configs import smollm2_shakespeare
from gkd.data import pipeline
from gkd.eval import metrics, stats, summary
from gkd.rundir import read_examples, read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))
METRICS = ("rougeL", "nll", "forward_kl", "reverse_kl", "teacher_logprob_of_samples")
NAMES = {"mode=sft,dataset=1.0,student=0.0": "SFT continued",
         "divergence=forward_kl,dataset=1.0,student=0.0": "supervised KD (FKL, λ=0)",
         "": "on-policy JSD(0.9), λ=1"}


def examples(run_dir):
  rows = read_examples(run_dir)
  return None if rows is None else sorted(rows, key=lambda r: r["example_id"])


def column(rows, metric):
  """The metric per example, or None where the run did not measure it (no teacher)."""
  return np.array([r[metric] for r in rows]) if all(metric in r for r in rows) else None


def repeated_share(text, n=3):
  """The share of a continuation's word n-grams that repeat an earlier one of it (0 without any)."""
  words = text.split()
  grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
  return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_share(text, n=2):
  """Distinct-n of one continuation: its unique word n-grams over its n-grams (1 without any)."""
  words = text.split()
  grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
  return len(set(grams)) / len(grams) if grams else 1.0


def method_name(point_dir):
  key = re.sub(r",?seed=\d+$", "", os.path.basename(point_dir))  # the on-policy point is "seed=0"
  return NAMES.get(key, key)


# The two SFT models trained without the teacher; their *_scored evals (the same model, one step
# at lr 1e-12) carry the teacher's metrics too.
runs = {"SFT student (the start)": os.path.join(HERE, "sft_scored"),
        "teacher (SmolLM2-135M-Instruct)": os.path.join(HERE, "teacher_test")}
for point in sorted(r["point"] for r in read_jsonl(os.path.join(HERE, "methods", "results.jsonl"))):
  runs[method_name(point)] = os.path.join(HERE, "methods", "points", point)
runs["SFT continued"] = os.path.join(HERE, "sft_continued_scored")
rows = {name: r for name, r in ((name, examples(d)) for name, d in runs.items()) if r is not None}

print("Mean per test passage, 95% CI over the 256 examples (bootstrap); the KLs, NLL and the")
print("teacher's log-likelihood of the student's T=1 samples are per token; ROUGE-L of greedy decoding.")
for name, r in rows.items():
  cells = []
  for m in METRICS:
    x = column(r, m)
    cells.append(f"{m} {summary.format_ci(None if x is None else stats.mean_ci(x))}")
  print(f"{name}: " + "; ".join(cells))

for base, others in (("SFT continued", None), ("supervised KD (FKL, λ=0)", ["on-policy JSD(0.9), λ=1"])):
  if base not in rows:
    continue
  print(f"\nMinus {base}, paired by example:")
  for name, r in rows.items():
    if name in (base, "teacher (SmolLM2-135M-Instruct)") or (others and name not in others):
      continue
    cells = []
    for m in METRICS:
      a, b = column(r, m), column(rows[base], m)
      d = None if a is None or b is None else stats.paired_difference_ci(a, b)
      cells.append(f"{m} {summary.format_ci(d, signed=True)}")
    print(f"{name}: " + "; ".join(cells))

print("\nRepetition in the greedy continuations: per passage, the share of word 3-grams that repeat an")
print("earlier one and distinct-2 (mean, 95% CI over passages); then distinct-2 over all passages")
print("together (the evaluator's distinct_2):")
for name, r in rows.items():
  texts = [e["completion"] for e in r]
  repeated = stats.mean_ci([repeated_share(t) for t in texts])
  distinct = stats.mean_ci([distinct_share(t) for t in texts])
  print(f"{name}: repeated 3-grams {summary.format_ci(repeated)}; "
        f"distinct-2 {summary.format_ci(distinct)}; "
        f"distinct-2 over all {metrics.distinct_n(texts, 2):.3f}")
on, kd = rows.get("on-policy JSD(0.9), λ=1"), rows.get("supervised KD (FKL, λ=0)")
if on and kd:
  cells = []
  for label, f in (("repeated 3-grams", repeated_share), ("distinct-2", distinct_share)):
    d = stats.paired_difference_ci(*([f(e["completion"]) for e in run] for run in (on, kd)))
    cells.append(f"{label} {summary.format_ci(d, signed=True)}")
  print("on-policy minus supervised KD, paired by passage: " + "; ".join(cells))

print("\nCompletions (greedy, 32 new tokens) of the first three test passages:")
passages = pipeline.eval_examples_for_config(smollm2_shakespeare.get_config(), "test", 3)
for i, passage in enumerate(passages):
  print(f"\n[{i}] prompt: {passage['prompt'][-160:]!r}")
  print(f"[{i}] reference: {passage['response']!r}")
  for name, r in rows.items():
    print(f"[{i}] {name}: {r[i]['completion']!r}")
