"""The train step: one pure, jit-compiled function per objective (gkd or sft).

A batch holds left-padded prompts and right-padded responses (from the dataset, the teacher
or the student's own samples; the step does not care which). The student and, for gkd, the
teacher score the concatenated sequence; logits at position t predict token t+1, so the
response tokens are predicted by the hidden states at [P-1, P+R-1). Only those positions reach
the vocabulary head, and the loss mask is the response mask (up to and including the first
EOS), never derived from pad ids.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gkd import objectives

# The arrays a train/eval batch carries into jitted code (loaders add host-side bookkeeping too).
BATCH_KEYS = ("prompt_tokens", "prompt_mask", "response_tokens", "response_mask")


@dataclasses.dataclass(frozen=True)
class Objective:
  """Static loss settings (hashable: part of the jit cache key)."""

  mode: str = "gkd"
  divergence: str = "generalized_jsd"
  divergence_params: tuple = (("beta", 0.5),)
  temperature: float = 1.0
  alpha: float = 1.0
  reduction: str = "sequence"
  teacher_topk: int = 0
  chunk_size: int = 0
  hidden_loss: str = ""
  hidden_weight: float = 0.0

  @classmethod
  def from_config(cls, config) -> "Objective":
    o = config.objective
    params = {"generalized_jsd": {"beta": o.beta, "normalized": o.jsd_normalized},
              "skew_kl": {"alpha": o.skew_alpha},
              "skew_reverse_kl": {"alpha": o.skew_alpha}}.get(o.divergence, {})
    return cls(mode=config.mode, divergence=o.divergence,
               divergence_params=tuple(sorted(params.items())), temperature=o.temperature,
               alpha=o.alpha, reduction=o.reduction, teacher_topk=o.teacher_topk,
               chunk_size=o.chunk_size, hidden_loss=o.hidden_loss, hidden_weight=o.hidden_weight)

  @property
  def uses_teacher(self) -> bool:
    return self.mode == "gkd"


class TrainState(NamedTuple):
  step: jax.Array
  params: Any  # {"student": pure dict of the student's nnx state, optionally "projection": [Ds, Dt]}
  opt_state: Any


def make_optimizer(optim, num_steps: int) -> optax.GradientTransformation:
  warmup = min(optim.warmup_steps, max(num_steps - 1, 0))
  if optim.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, optim.learning_rate, warmup, max(num_steps, warmup + 1))
  else:
    lr = optax.join_schedules([optax.linear_schedule(0.0, optim.learning_rate, max(warmup, 1)),
                               optax.constant_schedule(optim.learning_rate)], [max(warmup, 1)])
  return optax.chain(
      optax.clip_by_global_norm(optim.grad_clip) if optim.grad_clip > 0 else optax.identity(),
      optax.adamw(lr, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay),
  )


def sequence_inputs(batch):
  """Concatenates prompt and response: tokens, attention mask and the response slice."""
  tokens = jnp.concatenate([batch["prompt_tokens"], batch["response_tokens"]], axis=1)
  mask = jnp.concatenate([batch["prompt_mask"], batch["response_mask"]], axis=1)
  return tokens, mask


def response_hidden(model, batch):
  """Final hidden states at the positions that predict the response tokens: [B, R, D]."""
  tokens, mask = sequence_inputs(batch)
  hidden, _ = model.hidden_states(tokens, attention_mask=mask)
  p, r = batch["prompt_tokens"].shape[1], batch["response_tokens"].shape[1]
  return hidden[:, p - 1:p + r - 1]


def head(hidden, kernel):
  return jnp.einsum("btd,dv->btv", hidden, kernel.astype(hidden.dtype),
                    preferred_element_type=jnp.float32)


def loss_terms(params, teacher_params, batch, weight, *, student_graph, teacher_graph,
               objective: Objective):
  """(loss, metrics) for one (micro-)batch; `weight` is the global denominator."""
  student = nnx.merge(student_graph, params["student"])
  h_s = response_hidden(student, batch)
  labels, mask = batch["response_tokens"], batch["response_mask"]
  if not objective.uses_teacher:  # SFT: hard-label cross-entropy only
    ce = optax.softmax_cross_entropy_with_integer_labels(head(h_s, student.unembed_kernel()), labels)
    total, _ = objectives.masked_reduce(ce, mask, objective.reduction)
    loss = total / weight
    return loss, {"loss": loss, "hard_ce": loss}

  teacher = nnx.merge(teacher_graph, teacher_params)
  h_t = jax.lax.stop_gradient(response_hidden(teacher, batch))
  kwargs = dict(divergence=objective.divergence, divergence_params=dict(objective.divergence_params),
                temperature=objective.temperature, alpha=objective.alpha,
                reduction=objective.reduction, teacher_topk=objective.teacher_topk, weight=weight)
  if objective.chunk_size:
    loss, aux = objectives.chunked_distillation_loss(
        h_s, student.unembed_kernel(), h_t, jax.lax.stop_gradient(teacher.unembed_kernel()),
        labels, mask, chunk_size=objective.chunk_size, **kwargs)
  else:
    loss, aux = objectives.distillation_loss(
        head(h_s, student.unembed_kernel()), head(h_t, teacher.unembed_kernel()), labels, mask, **kwargs)
  metrics = {"divergence": aux["divergence"], "hard_ce": aux["hard_ce"]}
  if objective.hidden_loss:
    total, _ = objectives.hidden_state_loss(h_s, h_t, mask, kind=objective.hidden_loss,
                                            projection=params.get("projection"))
    metrics["hidden_loss"] = total / weight
    loss = loss + objective.hidden_weight * metrics["hidden_loss"]
  metrics["loss"] = loss
  return loss, metrics


def _micro_batches(batch, n: int):
  """[B, ...] -> [n, B/n, ...], interleaved so each micro-batch spans every data shard."""
  def split(x):
    b = x.shape[0]
    return jnp.swapaxes(x.reshape(b // n, n, *x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch, teacher_params, *, student_graph, teacher_graph,
               objective: Objective, optimizer, grad_accum_steps: int = 1):
  """One optimizer update; gradients are accumulated over `grad_accum_steps` micro-batches.

  The denominator (sequences with response tokens, or response tokens) is computed once for
  the whole global batch, so accumulation and data parallelism do not change the loss.
  """
  _, weight = objectives.masked_reduce(jnp.zeros(batch["response_mask"].shape, jnp.float32),
                                       batch["response_mask"], objective.reduction)
  weight = jnp.maximum(weight, 1.0)
  grad_fn = jax.value_and_grad(
      functools.partial(loss_terms, student_graph=student_graph, teacher_graph=teacher_graph,
                        objective=objective), has_aux=True)

  def accumulate(carry, micro):
    grads, metrics = carry
    (_, m), g = grad_fn(state.params, teacher_params, micro, weight)
    return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, metrics, m)), None

  micro = _micro_batches(batch, grad_accum_steps)
  first = jax.tree.map(lambda x: x[0], micro)
  (_, metrics0), grads0 = grad_fn(state.params, teacher_params, first, weight)
  rest = jax.tree.map(lambda x: x[1:], micro)
  (grads, metrics), _ = jax.lax.scan(accumulate, (grads0, metrics0), rest)

  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                 response_tokens=jnp.sum(batch["response_mask"]).astype(jnp.float32))
  return TrainState(state.step + 1, params, opt_state), metrics


def token_scores(model, batch):
  """Per-response-token log-probabilities log p(y_t | y_<t, x) under `model`: [B, R] float32."""
  logits = head(response_hidden(model, batch), model.unembed_kernel())
  logp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logp, batch["response_tokens"][..., None], axis=-1)[..., 0]
