"""Several teachers: `config.teachers`, a list of weighted model configs, and their combined loss.

`config.teachers` holds model configs (`gkd.train.defaults.model_config(weight=w, ...)`); an
empty list means the single `config.teacher`, a list of one. Weights are relative: they are
normalized to sum to 1. One teacher (either way) takes the plain single-teacher path, so
`teachers=[t]` trains exactly as `teacher=t`.

With several teachers the run's teacher is an `Ensemble` (the teachers' graphdefs, weights and
how to combine them: static, part of the jit cache key) and its parameters a tuple of the
teachers' pure dicts, so the one jit-compiled train step takes them all.
`objective.multi_teacher` picks the loss:

  "mixture" (default)  D(p̄ ‖ student) with p̄ = Σ_k w_k·p_k, the weighted average of the
                       teachers' distributions at the loss temperature (probabilities are
                       averaged: logsumexp_k(log p_k + log w_k)). The target is one distribution,
                       so every divergence keeps its meaning and its bounds (JSD ≤ log 2, top-k
                       mode, ...), and the divergence runs once whatever the number of teachers.
  "sum"                Σ_k w_k·D(p_k ‖ student), the weighted sum of per-teacher divergences
                       (the hard CE is counted once). For forward KL its gradient equals the
                       mixture's; for reverse KL it pulls the student towards the normalized
                       weighted geometric mean of the teachers (their consensus), where the
                       mixture lets it settle on any one teacher's mode.

On-policy samples are scored by every teacher. Sequence-level KD (mix.teacher) samples from the
first teacher in the list (`Ensemble.generator`): its generations are the cached fixed targets, and the
list's order is the user's statement of which teacher leads. Eval reports the held-out KLs to
the mixture (`forward_kl`, `reverse_kl`) and each teacher's `forward_kl/teacher_k`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import objectives, scoring
from gkd.teachers.base import StudentView, Teacher, place
from gkd.teachers.build import MODEL_SOURCES, teacher_configs

COMBINE = ("mixture", "sum")


def normalized_weights(config) -> tuple[float, ...]:
  """The teachers' weights normalized to sum to 1 (a config without `weight` counts 1)."""
  raw = np.asarray([float(c.get("weight", 1.0)) for c in teacher_configs(config)], np.float64)
  return tuple(float(w) for w in raw / raw.sum())


def check(config) -> list[str]:
  """Problems with the teacher list (messages naming the field); empty when it is fine."""
  sources = MODEL_SOURCES[:-1]  # a teacher is not derived
  listed = list(config.get("teachers", None) or [])
  problems = []
  for i, c in enumerate(listed):
    w = c.get("weight", 1.0)
    if not isinstance(w, (int, float)) or not np.isfinite(w) or w <= 0:
      problems.append(f"teachers[{i}].weight={w!r} must be a finite number > 0.")
    if c.get("source") not in sources:
      problems.append(f"teachers[{i}].source={c.get('source')!r}; expected one of {sources}.")
    elif c.source == "pretrained" and not c.path:
      problems.append(f"teachers[{i}].source='pretrained' needs teachers[{i}].path.")
  obj = config.objective
  combine = obj.get("multi_teacher", "mixture")
  if combine not in COMBINE:
    problems.append(f"objective.multi_teacher={combine!r}; expected one of {COMBINE}.")
  if len(listed) > 1:
    for field, bad in (("chunk_size", obj.chunk_size), ("hidden_loss", obj.hidden_loss)):
      if bad:
        problems.append(f"objective.{field}={bad!r} takes a single teacher; config.teachers "
                        f"lists {len(listed)}.")
  return problems


@dataclasses.dataclass(frozen=True)
class Ensemble(Teacher):
  """Several teachers: their graphdefs, normalized weights and how their losses combine.

  Its params are a tuple of the teachers' pure dicts, so the one jitted step takes them all.
  """

  graphs: tuple
  weights: tuple[float, ...]
  combine: str = "mixture"

  kind = "ensemble"
  in_eval = True

  check = staticmethod(check)

  @classmethod
  def build(cls, config, built, mesh):
    graphs, params = zip(*(place(model, mesh) for model in built.teachers))
    combine = config.objective.get("multi_teacher", "mixture")
    return cls(tuple(graphs), normalized_weights(config), combine), tuple(params)

  def members(self, params) -> list[nnx.Module]:
    return [nnx.merge(g, p) for g, p in zip(self.graphs, params)]

  def loss_terms(self, student: StudentView, params, batch, weight, objective):
    """(loss, metrics) of the student's response logits against every teacher, each scoring the
    batch's exact sequences under stop_gradient."""
    t_logits = [jax.lax.stop_gradient(scoring.response_logits(t, batch))
                for t in self.members(params)]
    return combined_loss(student.logits(), t_logits, batch["response_tokens"],
                         batch["response_mask"], objective, weights=self.weights,
                         combine=self.combine, weight=weight)

  def eval_logits(self, params, batch):
    """The teachers' mixture at T = 1, whichever loss the run trains with, and each one's logits:
    eval's KLs are to that one distribution, and to each teacher apart."""
    logits = [scoring.response_logits(t, batch) for t in self.members(params)]
    return mixture_logits(logits, self.weights), {f"teacher_{k}": z for k, z in enumerate(logits)}

  def token_logprobs(self, params, batch):
    return scoring.label_logprobs(self.eval_logits(params, batch)[0], batch["response_tokens"])

  def generator(self, params):
    """The first teacher: the list's order is the user's statement of which one leads."""
    return self.graphs[0], params[0]

  def modules(self, params):
    return self.members(params)

  def describe(self) -> str:
    return f"{len(self.graphs)} teachers ({self.combine})"


def mixture_logits(teacher_logits, weights, temperature: float = 1.0) -> jax.Array:
  """Logits m [..., V] whose softmax(m / T) is Σ_k w_k·softmax(z_k / T).

  m = T·logsumexp_k(log_softmax(z_k / T) + log w_k): the probabilities are averaged (not the
  logits), so the result can be handed to any divergence at temperature T as one teacher.
  Entries of −inf in every teacher stay −inf.
  """
  z = jnp.stack([jnp.asarray(t, jnp.float32) for t in teacher_logits]) / temperature
  log_w = jnp.log(jnp.asarray(weights, jnp.float32)).reshape((-1,) + (1,) * (z.ndim - 1))
  return temperature * jax.nn.logsumexp(jax.nn.log_softmax(z, axis=-1) + log_w, axis=0)


def combined_loss(student_logits, teacher_logits: list, labels, mask, objective, *, weights,
                  combine: str = "mixture", weight=None):
  """(loss, metrics) of logits [B, T, V] against several teachers' logits, as `combine` says.

  "mixture": `distillation_loss` against `mixture_logits` at the objective's temperature.
  "sum": Σ_k w_k·(α·T²·Σdiv_k + (1−α)·Σce)/weight; as Σ_k w_k = 1 the CE counts once.
  metrics: loss, divergence (the sum's is Σ_k w_k·div_k), hard_ce and, for "sum",
  divergence/teacher_k.
  """
  if combine == "mixture":
    target = mixture_logits(teacher_logits, weights, objective.temperature)
    loss, aux = objectives.distillation_loss(student_logits, target, labels, mask, objective,
                                             weight=weight)
    return loss, {"divergence": aux["divergence"], "hard_ce": aux["hard_ce"], "loss": loss}
  loss, metrics = 0.0, {"divergence": 0.0}
  for k, (w, logits) in enumerate(zip(weights, teacher_logits)):
    loss_k, aux = objectives.distillation_loss(student_logits, logits, labels, mask, objective,
                                               weight=weight)
    loss = loss + w * loss_k
    metrics["divergence"] = metrics["divergence"] + w * aux["divergence"]
    metrics[f"divergence/teacher_{k}"] = aux["divergence"]
  return loss, dict(metrics, hard_ce=aux["hard_ce"], loss=loss)
