"""Model-level evaluation: generate, grade, and measure the student against the teacher.

`Evaluator` is built once per run from the config and the models' graphdefs, and called with
parameters (`evaluator(student_params, teacher_params)`), so it evaluates any checkpoint or
export without a training run. Metrics (all scalars, written as `eval/<name>`):
  task        greedy decoding (the GKD paper evaluates reasoning greedily): `accuracy` by the
              task's grader (answer extraction for reasoning), ROUGE/BLEU for text tasks, and
              `distinct_2` of the generations;
  held-out    on the split's reference responses: token-level `forward_kl` and `reverse_kl`
              from the teacher (several teachers: to their mixture, and `forward_kl/teacher_k`
              to each), the student's and the teacher's `nll` per token;
  on-policy   `teacher_logprob_of_samples`: the teacher's mean per-token log-probability of
              student samples drawn at T=1 (how plausible the student's own text is to the teacher).
Every example's own values come back too (`EvalResult.examples`), for bootstrap intervals
and paired comparisons across runs.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import divergences, sampling, scoring, sharding
from gkd.data import pipeline, tasks
from gkd.eval import metrics as text_metrics


@functools.partial(jax.jit, static_argnames=("student_graph", "teacher"))
def _reference_sums(student_params, teacher_params, batch, *, student_graph, teacher):
  """Per-row sums [B] over the reference response tokens: the student's NLL and, with a
  teacher, the two KLs and the teacher's NLL."""
  student = nnx.merge(student_graph, student_params)
  mask = batch["response_mask"].astype(jnp.float32)
  labels = batch["response_tokens"]
  s_logits = scoring.response_logits(student, batch)
  sums = {"tokens": mask.sum(-1), "nll": -(scoring.label_logprobs(s_logits, labels) * mask).sum(-1)}
  if teacher is not None:
    # Several teachers: KLs to their mixture, plus each teacher's forward KL (gkd.teachers.ensemble).
    t_logits, per_teacher = teacher.eval_logits(teacher_params, batch)
    sums.update({f"forward_kl/{name}": (divergences.forward_kl(student_logits=s_logits,
                                                              teacher_logits=z) * mask).sum(-1)
                 for name, z in per_teacher.items()})
    kl_args = dict(student_logits=s_logits, teacher_logits=t_logits)
    sums["forward_kl"] = (divergences.forward_kl(**kl_args) * mask).sum(-1)
    sums["reverse_kl"] = (divergences.reverse_kl(**kl_args) * mask).sum(-1)
    sums["teacher_nll"] = -(scoring.label_logprobs(t_logits, labels) * mask).sum(-1)
  return sums


@functools.partial(jax.jit, static_argnames=("teacher",))
def _teacher_logprob_sums(teacher_params, batch, *, teacher):
  """Per-row sums [B] of the teacher's log-probabilities of the batch's responses."""
  scores = teacher.token_logprobs(teacher_params, batch)
  mask = batch["response_mask"].astype(jnp.float32)
  return {"sample_logprob": (scores * mask).sum(-1), "sample_tokens": mask.sum(-1)}


@dataclasses.dataclass
class EvalResult:
  metrics: dict  # corpus-level scalars
  examples: list[dict]  # one row per example: example_id, completion and its own values


class Evaluator:
  """Evaluates student parameters (and their distance to a teacher's) on `config.eval.split`."""

  def __init__(self, config, tokenizer, mesh, *, student_graph, teacher=None):
    """`teacher` (a gkd.teachers.Teacher) is measured against only when it can be (`in_eval`)."""
    ec = config.eval
    self.config, self.tokenizer, self.mesh = config, tokenizer, mesh
    self.student_graph = student_graph
    self.teacher = teacher if teacher is not None and teacher.in_eval else None
    self.task = tasks.get_task(config.data.task)
    self.examples = pipeline.eval_examples_for_config(config, ec.split, ec.num_examples)
    self.batch_size = min(ec.batch_size, len(self.examples))
    self.max_new_tokens = ec.max_new_tokens or config.data.max_response_len
    self.sampler = sampling.Sampler(student_graph, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    self._make_loader = functools.partial(
        pipeline.loader_for_config, config, tokenizer, split=ec.split, batch_size=self.batch_size,
        shuffle=False, num_epochs=1, num_examples=len(self.examples))

  def __call__(self, student_params, teacher_params=None) -> EvalResult:
    has_teacher = self.teacher is not None
    rows, completions = [], []
    key = jax.random.fold_in(jax.random.key(self.config.seed), 2**30)  # fixed: evals are comparable
    generate = functools.partial(self.sampler, student_params, max_new_tokens=self.max_new_tokens)
    for i, local in enumerate(self._make_loader()):
      ids = local["example_id"]  # -1 marks the padding rows of the last batch (masks all False)
      batch = sharding.global_batch(self.mesh, {k: local[k] for k in scoring.BATCH_KEYS})
      sums = _reference_sums(student_params, teacher_params, batch,
                             student_graph=self.student_graph, teacher=self.teacher)
      greedy = generate(batch["prompt_tokens"], batch["prompt_mask"], rng=key, temperature=0.0)
      if has_teacher:
        sampled = generate(batch["prompt_tokens"], batch["prompt_mask"],
                           rng=jax.random.fold_in(key, i), temperature=1.0)
        scored = dict(batch, response_tokens=sampled.tokens, response_mask=sampled.mask)
        sums.update(_teacher_logprob_sums(teacher_params, scored, teacher=self.teacher))
      # Every host gathers every row (multi-host: a global array is not fetchable as a whole).
      sums = {k: sharding.fetch(v) for k, v in sums.items()}
      tokens, mask = sharding.fetch(greedy.tokens), sharding.fetch(greedy.mask)
      ids = sharding.fetch(sharding.global_batch(self.mesh, {"ids": ids})["ids"])
      for r, j in enumerate(ids):
        if j < 0:
          continue
        completions.append(self.tokenizer.decode(tokens[r][mask[r]]))
        rows.append({"example_id": int(j), **{k: float(v[r]) for k, v in sums.items()}})
    return self._summarize(rows, completions)

  def reference_nll(self, student_params) -> float:
    """The student's NLL per token of the split's reference responses (no generation)."""
    total, tokens = 0.0, 0.0
    for local in self._make_loader():
      batch = sharding.global_batch(self.mesh, {k: local[k] for k in scoring.BATCH_KEYS})
      sums = _reference_sums(student_params, None, batch, student_graph=self.student_graph,
                             teacher=None)
      total += float(np.sum(sharding.fetch(sums["nll"])))
      tokens += float(np.sum(sharding.fetch(sums["tokens"])))
    return total / max(tokens, 1.0)

  def _summarize(self, rows, completions) -> EvalResult:
    totals = {k: sum(r[k] for r in rows) for k in (rows[0] if rows else {})}
    tokens = max(totals.get("tokens", 0.0), 1.0)
    out = {"num_examples": len(rows), "nll": totals.get("nll", 0.0) / tokens}
    out["perplexity"] = text_metrics.perplexity(totals.get("nll", 0.0), tokens)
    for k in sorted(totals):  # forward_kl/teacher_k: several teachers' own KLs
      if k in ("forward_kl", "reverse_kl", "teacher_nll") or k.startswith("forward_kl/"):
        out[k] = totals[k] / tokens
    if "sample_tokens" in totals:
      out["teacher_logprob_of_samples"] = totals["sample_logprob"] / max(totals["sample_tokens"], 1.0)
    examples = [self.examples[r["example_id"]] for r in rows]
    out.update(text_metrics.task_metrics(self.task, completions, examples))
    out["distinct_2"] = text_metrics.distinct_n(completions, 2)
    scores = text_metrics.example_scores(self.task, completions, examples)
    per_example = []
    for i, (row, completion) in enumerate(zip(rows, completions)):
      n = max(row.pop("tokens"), 1.0)
      per = {"example_id": row.pop("example_id"), "completion": completion,
             **{k: float(v[i]) for k, v in scores.items()}}
      per.update({k: v / n for k, v in row.items() if not k.startswith("sample_")})
      if "sample_tokens" in row:
        per["teacher_logprob_of_samples"] = row["sample_logprob"] / max(row["sample_tokens"], 1.0)
      per_example.append(per)
    return EvalResult(out, per_example)
