"""Model-level evaluation: generate, grade, and measure the student against the teacher.

Metrics (all scalars, written as `eval/<name>`):
  task        greedy decoding (the GKD paper evaluates reasoning greedily): `accuracy` by the
              task's grader (answer extraction for reasoning), ROUGE/BLEU for text tasks, and
              `distinct_2` of the generations;
  held-out    on the split's reference responses: token-level `forward_kl` and `reverse_kl`
              from the teacher, the student's and the teacher's `nll` per token;
  on-policy   `teacher_logprob_of_samples`: the teacher's mean per-token log-probability of
              student samples drawn at T=1 (how plausible the student's own text is to the teacher).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import divergences, sampling
from gkd.eval import metrics as text_metrics
from gkd.train import sharding, step as step_lib


@functools.partial(jax.jit, static_argnames=("student_graph", "teacher_graph"))
def _reference_sums(student_params, teacher_params, batch, *, student_graph, teacher_graph):
  """Sums over response tokens of the student's NLL and, with a teacher, KLs and teacher NLL."""
  student = nnx.merge(student_graph, student_params)
  mask = batch["response_mask"].astype(jnp.float32)
  s_logits = step_lib.head(step_lib.response_hidden(student, batch), student.unembed_kernel())
  labels = batch["response_tokens"][..., None]
  s_logp = jax.nn.log_softmax(s_logits)
  sums = {"tokens": mask.sum(),
          "nll": -(jnp.take_along_axis(s_logp, labels, -1)[..., 0] * mask).sum()}
  if teacher_graph is not None:
    teacher = nnx.merge(teacher_graph, teacher_params)
    t_logits = step_lib.head(step_lib.response_hidden(teacher, batch), teacher.unembed_kernel())
    kl_args = dict(student_logits=s_logits, teacher_logits=t_logits)
    sums["forward_kl"] = (divergences.forward_kl(**kl_args) * mask).sum()
    sums["reverse_kl"] = (divergences.reverse_kl(**kl_args) * mask).sum()
    t_logp = jax.nn.log_softmax(t_logits)
    sums["teacher_nll"] = -(jnp.take_along_axis(t_logp, labels, -1)[..., 0] * mask).sum()
  return sums


@functools.partial(jax.jit, static_argnames=("teacher_graph",))
def _teacher_logprob_sums(teacher_params, batch, *, teacher_graph):
  scores = step_lib.token_scores(nnx.merge(teacher_graph, teacher_params), batch)
  mask = batch["response_mask"].astype(jnp.float32)
  return {"logprob": (scores * mask).sum(), "tokens": mask.sum()}


class Evaluator:
  def __init__(self, config, tokenizer, mesh):
    from gkd.data import pipeline, tasks
    ec = config.eval
    self.config, self.tokenizer, self.mesh = config, tokenizer, mesh
    self.task = tasks.get_task(config.data.task)
    self.examples = pipeline.make_eval_examples(config.data.task, ec.split, ec.num_examples,
                                                data_dir=config.data.data_dir or None)
    self.batch_size = min(ec.batch_size, len(self.examples))
    self.max_new_tokens = ec.max_new_tokens or config.data.max_response_len
    self._make_loader = functools.partial(
        pipeline.loader_for_config, config, tokenizer, split=ec.split, batch_size=self.batch_size,
        shuffle=False, num_epochs=1, num_examples=len(self.examples))

  def _generate(self, model, batch, *, temperature, key):
    return sampling.sample(model, batch["prompt_tokens"], batch["prompt_mask"], rng=key,
                           max_new_tokens=self.max_new_tokens, temperature=temperature,
                           eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id)

  def __call__(self, run) -> dict:
    student = run.student()
    has_teacher = run.teacher_graph is not None
    sums, completions, examples = {}, [], []
    key = jax.random.fold_in(jax.random.key(self.config.seed), 2**30)  # fixed: evals are comparable
    for i, local in enumerate(self._make_loader()):
      ids = local.pop("example_id")  # -1 marks the padding rows of the last batch (masks all False)
      batch = sharding.global_batch(self.mesh, {k: local[k] for k in step_lib.BATCH_KEYS})
      ref = _reference_sums(run.state.params["student"], run.teacher_params, batch,
                            student_graph=run.student_graph, teacher_graph=run.teacher_graph)
      greedy = self._generate(student, batch, temperature=0.0, key=key)
      tokens, mask = np.asarray(greedy.tokens), np.asarray(greedy.mask)
      completions += [self.tokenizer.decode(t[m]) for t, m, j in zip(tokens, mask, ids) if j >= 0]
      examples += [self.examples[int(j)] for j in ids if j >= 0]
      if has_teacher:
        sampled = self._generate(student, batch, temperature=1.0, key=jax.random.fold_in(key, i))
        scored = dict(batch, response_tokens=sampled.tokens, response_mask=sampled.mask)
        ref.update({f"sample_{k}": v for k, v in _teacher_logprob_sums(
            run.teacher_params, scored, teacher_graph=run.teacher_graph).items()})
      for k, v in jax.device_get(ref).items():
        sums[k] = sums.get(k, 0.0) + float(v)
    return self._summarize(sums, completions, examples)

  def _summarize(self, sums, completions, examples) -> dict:
    tokens = max(sums.get("tokens", 0.0), 1.0)
    out = {"num_examples": len(examples), "nll": sums.get("nll", 0.0) / tokens}
    out["perplexity"] = text_metrics.perplexity(sums.get("nll", 0.0), tokens)
    for k in ("forward_kl", "reverse_kl", "teacher_nll"):
      if k in sums:
        out[k] = sums[k] / tokens
    if "sample_tokens" in sums:
      out["teacher_logprob_of_samples"] = sums["sample_logprob"] / max(sums["sample_tokens"], 1.0)
    out.update(text_metrics.task_metrics(self.task, completions, examples))
    out["distinct_2"] = text_metrics.distinct_n(completions, 2)
    return out
