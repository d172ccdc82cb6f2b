"""Sampled-output metrics of a sweep's students: the quality–diversity curve over the sampling
temperature (the GKD paper's Fig. 4) and the teacher's per-position NLL of the students' samples.

  python experiments/quality_diversity.py --config=configs/arm2_smollm2.py[:ARG] --sweep=SWEEP_DIR \
      --out=experiments/results/arm2_smollm2/METHODS_DIR [--num_prompts=200] [--samples=4] [--seeds=0]

For every finished point of the sweep (its student export under SWEEP/points/NAME/export), on the
first `num_prompts` test prompts, `samples` completions per prompt at each temperature in TEMPS:
  quality        the task's score of the samples (accuracy for graded tasks, else ROUGE-L);
  diversity      per prompt, the share of distinct completions among its samples, and distinct-2
                 over its samples' words; repetition: the share of a completion's word 3-grams
                 that repeat an earlier one in it;
  teacher NLL    at T=1, the teacher's −log p of each sampled token, by position (tokens).
The SFT student (the sweep's start, `--start`) and the teacher itself are measured the same way.
Writes OUT/quality_diversity.jsonl (one row per model × temperature), OUT/quality_diversity.png
(gkd.eval.plots.quality_diversity) and OUT/quality_diversity.md (plan.md's H3, seed by seed).
Neither objective optimises these directly: they are the judge, not the target.
"""

import argparse
import collections
import json
import os

import jax
import numpy as np
from flax import nnx

from gkd import sampling, scoring
from gkd.data import pipeline, tasks
from gkd.eval import compare, metrics, plots
from gkd.eval.gate import score
from gkd.rundir import read_jsonl
from gkd.teachers.build import build_models

TEMPS = (0.25, 0.5, 1.0, 1.5)
# H3's diversity axis (plan.md, fifth amendment): the share of distinct samples per prompt
# saturates at 1 on long solutions; distinct word bigrams across a prompt's samples do not.
DIVERSITY = "distinct_2"


def repetition(text: str, n: int = 3) -> float:
  """The share of a text's word n-grams that repeat an earlier one (0 when it has none)."""
  words = text.split()
  grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
  return 1 - len(set(grams)) / len(grams) if grams else 0.0


def measure(config, tokenizer, teacher, student, *, num_prompts: int, samples: int) -> list[dict]:
  """Rows {temperature, quality, unique, distinct_2, repetition, teacher_nll_by_position}."""
  task = tasks.get_task(config.data.task)
  examples = pipeline.eval_examples_for_config(config, "test", num_prompts)
  t_graph, t_params = nnx.split(teacher)
  s_graph, s_params = nnx.split(student)
  sampler = sampling.Sampler(s_graph, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
  width = config.data.max_response_len
  rows = []
  for ti, temperature in enumerate(TEMPS):
    texts = collections.defaultdict(list)
    nll_sum, nll_count = np.zeros(width), np.zeros(width)
    loader = pipeline.loader_for_config(config, tokenizer, split="test", batch_size=50,
                                        shuffle=False, num_epochs=1, num_examples=len(examples))
    for bi, batch in enumerate(loader):
      for k in range(samples):
        key = jax.random.fold_in(jax.random.key(1000 * ti + k), bi)
        out = sampler(s_params, batch["prompt_tokens"], batch["prompt_mask"], rng=key,
                      max_new_tokens=width, temperature=temperature)
        tok, mask = np.asarray(out.tokens), np.asarray(out.mask)
        for r, i in enumerate(batch["example_id"]):
          if i >= 0:
            texts[int(i)].append(tokenizer.decode(tok[r][mask[r]].tolist()))
        if temperature == 1.0:
          scored = dict(prompt_tokens=batch["prompt_tokens"], prompt_mask=batch["prompt_mask"],
                        response_tokens=tok, response_mask=mask)
          lp = np.asarray(scoring.token_scores(nnx.merge(t_graph, t_params), scored))
          real = mask & (batch["example_id"] >= 0)[:, None]
          nll_sum += -(lp * real).sum(0)
          nll_count += real.sum(0)
    quality = [score(task, c, examples[i]) for i, cs in texts.items() for c in cs]
    row = {"temperature": temperature, "num_prompts": len(texts), "samples": samples,
           "quality": float(np.mean(quality)),
           "unique": float(np.mean([len(set(cs)) / len(cs) for cs in texts.values()])),
           "distinct_2": float(np.mean([metrics.distinct_n(cs, 2) for cs in texts.values()])),
           "repetition": float(np.mean([repetition(c) for cs in texts.values() for c in cs]))}
    if temperature == 1.0:
      row["teacher_nll_by_position"] = (nll_sum / np.maximum(nll_count, 1)).tolist()
      row["tokens_by_position"] = nll_count.astype(int).tolist()
      row["teacher_nll"] = float(nll_sum.sum() / max(nll_count.sum(), 1))
    rows.append(row)
  return rows


def curve(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
  """A model's (diversity, quality) points over the temperatures, sorted by diversity."""
  rows = sorted(rows, key=lambda r: (r[DIVERSITY], r["temperature"]))
  return np.array([r[DIVERSITY] for r in rows]), np.array([r["quality"] for r in rows])


def gap_at_equal_diversity(a: list[dict], b: list[dict], *, min_overlap=0.05, grid=50):
  """The mean of a's quality minus b's over `grid` diversities spanning the overlap of their
  diversity ranges, each curve joined linearly (plan.md, fourth amendment); None when the
  overlap is narrower than `min_overlap`."""
  (xa, ya), (xb, yb) = curve(a), curve(b)
  lo, hi = max(xa[0], xb[0]), min(xa[-1], xb[-1])
  if hi - lo < min_overlap:
    return None
  x = np.linspace(lo, hi, grid)
  return float(np.mean(np.interp(x, xa, ya) - np.interp(x, xb, yb)))


def nll_slope(row: dict, *, min_tokens=20) -> float:
  """The least-squares slope of the teacher's NLL of a model's T=1 samples against the token
  position, over the positions holding at least `min_tokens` sampled tokens."""
  counts = np.array(row["tokens_by_position"])
  nll = np.array(row["teacher_nll_by_position"])
  positions = np.flatnonzero(counts >= min_tokens)
  return float(np.polyfit(positions, nll[positions], 1)[0])


def verdict(values: list, *, better) -> str:
  """"supported" when every seed's value is on the hypothesis's side, "against" when none is."""
  if not values or any(v is None for v in values):
    return "undefined"
  hits = [better(v) for v in values]
  return "supported" if all(hits) else "against" if not any(hits) else "inconclusive"


def h3_report(rows: list[dict], on_policy: list[str], off_policy: list[str],
              primary: str) -> str:
  """plan.md's H3, seed by seed: each on-policy method against each off-policy one, the gap in
  quality at equal diversity (H3a) and the difference in the teacher-NLL slope (H3b)."""
  by = collections.defaultdict(list)
  for r in rows:
    by[(r.get("method"), r.get("seed"))].append(r)
  seeds = sorted({s for m, s in by if m == primary})
  lines = [f"| on-policy | off-policy | seeds | H3a: quality gap at equal {DIVERSITY}, per seed "
           "| H3a | H3b: teacher-NLL slope difference, per seed | H3b |", "|---" * 7 + "|"]
  fmt = lambda vs, f: ", ".join("undefined" if v is None else format(v, f) for v in vs)
  t1 = lambda m, s: next(r for r in by[(m, s)] if r["temperature"] == 1.0)
  for on in [primary] + [m for m in on_policy if m != primary]:
    for off in off_policy:
      both = [s for s in seeds if by.get((on, s)) and by.get((off, s))]
      gaps = [gap_at_equal_diversity(by[(on, s)], by[(off, s)]) for s in both]
      slopes = [nll_slope(t1(on, s)) - nll_slope(t1(off, s)) for s in both]
      name = f"**{on}**" if on == primary else on
      lines.append(f"| {name} | {off} | {','.join(map(str, both))} | {fmt(gaps, '+.4f')} "
                   f"| {verdict(gaps, better=lambda v: v > 0)} | {fmt(slopes, '+.5f')} "
                   f"| {verdict(slopes, better=lambda v: v < 0)} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", required=True)
  parser.add_argument("--sweep", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--start", default="", help="the SFT student's export (every run's start)")
  parser.add_argument("--num_prompts", type=int, default=200)
  parser.add_argument("--samples", type=int, default=4)
  parser.add_argument("--seeds", default="0", help="comma-separated seeds of the sweep to measure")
  parser.add_argument("--primary", default="gkd_jsd0.9", help="H3's on-policy method (plan.md)")
  args = parser.parse_args()
  seeds = {int(s) for s in args.seeds.split(",")}
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "quality_diversity.jsonl")
  done = {r["model"] for r in read_jsonl(path)}  # resumable: models already measured are kept
  _, module = compare.load_config(args.config, "stage=gkd")
  fraction = {n: float(m.get("mix.student", 0.0)) for n, m in module.METHODS.items()}
  models = [("start", {"method": "start"}, args.start)] if args.start else []
  for method, seed, p in compare.finished_points(args.sweep, module.METHODS):
    export = os.path.join(args.sweep, "points", p["point"], "export")
    if seed in seeds and os.path.isdir(export):
      info = {"method": method, "seed": seed, "student_fraction": fraction[method]}
      models.append((f"{method} seed {seed}", info, export))
  models.append(("teacher", {"method": "teacher"}, None))
  for name, info, export in models:
    if name in done:
      continue
    config, _ = compare.load_config(args.config, "stage=gkd")
    if export:  # set here, not as a config argument: a point's name holds commas
      config.student.path = export
    else:  # the teacher itself in the student's slot
      config.student.update(source=config.teacher.source, path=config.teacher.path)
    tokenizer, teacher, student = build_models(config)
    rows = measure(config, tokenizer, teacher, student, num_prompts=args.num_prompts,
                   samples=args.samples)
    with open(path, "a") as f:  # a model's rows together: a killed run redoes only that model
      f.writelines(json.dumps({"model": name, **info, **row}) + "\n" for row in rows)
    print(f"{name}: done", flush=True)
  rows = read_jsonl(path)
  plots.quality_diversity(rows, diversity=DIVERSITY, save_to=args.out)
  on = [n for n, f in fraction.items() if f > 0]
  off = [n for n, f in fraction.items() if f == 0 and n != "sft"]
  with open(os.path.join(args.out, "quality_diversity.md"), "w") as f:
    f.write(h3_report(rows, on, off, args.primary))


if __name__ == "__main__":
  main()
