"""The train step: one pure, jit-compiled function for every teacher (gkd.teachers) and objective.

A batch holds left-padded prompts and right-padded responses (from the dataset, the teacher
or the student's own samples; the step does not care which), scored as `gkd.scoring`
describes. The loss mask is the response mask (up to and including the first EOS), never
derived from pad ids.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gkd import objectives
from gkd.models import lora
from gkd.objectives import Objective, policy_gradient
from gkd.scoring import response_layers
from gkd.teachers import StudentView, Teacher


class TrainState(NamedTuple):
  step: jax.Array
  # {"student": the student's nnx state as a pure dict, or with LoRA "lora": its adapters (see
  # gkd.models.lora); optionally "projection" [Ds, Dt] or "layer_projections" (one per layer_map pair)}
  params: Any
  opt_state: Any


def loss_terms(params, teacher_params, batch, weight, student_base=None, *, student_graph,
               teacher: Teacher, objective: Objective, lora_scale: float | None = None):
  """(loss, metrics) for one (micro-)batch; `weight` is the global denominator.

  The student is scored at the response positions (`gkd.teachers.StudentView`) and the teacher
  turns that into the loss (supervised fine-tuning is the `Labels` teacher). A LoRA student's
  frozen weights come in `student_base` (not differentiated), its adapters in params["lora"].
  """
  student = nnx.merge(student_graph, lora.student_params(params, student_base, lora_scale))
  view = StudentView(student, *response_layers(student, batch), params)  # unused blocks compile away
  loss, metrics = teacher.loss_terms(view, teacher_params, batch, weight, objective)
  if objective.rl_weight:  # REINFORCE on the graded on-policy samples (gkd.objectives.policy_gradient)
    metrics["pg_loss"] = policy_gradient.loss(view.logits(), batch, weight, objective.reduction)
    loss = metrics["loss"] = loss + objective.rl_weight * metrics["pg_loss"]
  return loss, metrics


def _micro_batches(batch, n: int):
  """[B, ...] -> [n, B/n, ...], interleaved so each micro-batch spans every data shard."""
  def split(x):
    b = x.shape[0]
    return jnp.swapaxes(x.reshape(b // n, n, *x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch, teacher_params, student_base=None, *, student_graph,
               teacher: Teacher, objective: Objective, optimizer, grad_accum_steps: int = 1,
               lora_scale: float | None = None):
  """One optimizer update; gradients are accumulated over `grad_accum_steps` micro-batches.

  The denominator (sequences with response tokens, or response tokens) is computed once for
  the whole global batch, so accumulation and data parallelism do not change the loss.
  """
  _, weight = objectives.masked_reduce(jnp.zeros(batch["response_mask"].shape, jnp.float32),
                                       batch["response_mask"], objective.reduction)
  weight = jnp.maximum(weight, 1.0)
  grad_fn = jax.value_and_grad(
      functools.partial(loss_terms, student_graph=student_graph, teacher=teacher,
                        objective=objective, lora_scale=lora_scale), has_aux=True)

  def accumulate(carry, micro):
    grads, metrics = carry
    (_, m), g = grad_fn(state.params, teacher_params, micro, weight, student_base)
    return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, metrics, m)), None

  micro = _micro_batches(batch, grad_accum_steps)
  first = jax.tree.map(lambda x: x[0], micro)
  (_, metrics0), grads0 = grad_fn(state.params, teacher_params, first, weight, student_base)
  rest = jax.tree.map(lambda x: x[1:], micro)
  (grads, metrics), _ = jax.lax.scan(accumulate, (grads0, metrics0), rest)

  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                 response_tokens=jnp.sum(batch["response_mask"]).astype(jnp.float32))
  return TrainState(state.step + 1, params, opt_state), metrics
