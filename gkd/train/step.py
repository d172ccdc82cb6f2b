"""The train step: one pure, jit-compiled function for distillation (an `Objective`) or SFT.

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
from gkd.objectives import Objective, layer_distill, policy_gradient
from gkd.scoring import head, response_layers


class TrainState(NamedTuple):
  step: jax.Array
  # {"student": the student's nnx state as a pure dict, or with LoRA "lora": its adapters (see
  # gkd.models.lora); optionally "projection" [Ds, Dt] or "layer_projections" (one per layer_map pair)}
  params: Any
  opt_state: Any


def loss_terms(params, teacher_params, batch, weight, student_base=None, *, student_graph,
               teacher_graph, objective: Objective, sft: bool, layer_map: layer_distill.Pairs = (),
               lora_scale: float | None = None):
  """(loss, metrics) for one (micro-)batch; `weight` is the global denominator.

  With `sft` the loss is the hard-label cross-entropy alone (no teacher), reduced as
  `objective.reduction` says. `layer_map` pairs (student block, teacher block) for the
  hidden-state term (see gkd.objectives.layer_distill); empty: the last hidden state. A LoRA student's
  frozen weights come in `student_base` (not differentiated), its adapters in params["lora"].
  """
  student = nnx.merge(student_graph, lora.student_params(params, student_base, lora_scale))
  h_s, s_layers = response_layers(student, batch)  # unused block outputs are compiled away
  labels, mask = batch["response_tokens"], batch["response_mask"]
  if sft:
    ce = optax.softmax_cross_entropy_with_integer_labels(head(h_s, student.unembed_kernel()), labels)
    total, _ = objectives.masked_reduce(ce, mask, objective.reduction)
    loss = total / weight
    return loss, {"loss": loss, "hard_ce": loss}

  loss, metrics = _distillation_terms(params, student, h_s, s_layers if layer_map else None,
                                      teacher_params, batch, weight, teacher_graph=teacher_graph,
                                      objective=objective, layer_map=layer_map)
  if objective.rl_weight:  # REINFORCE on the graded on-policy samples (gkd.objectives.policy_gradient)
    metrics["pg_loss"] = policy_gradient.loss(head(h_s, student.unembed_kernel()), batch, weight,
                                              objective.reduction)
    loss = metrics["loss"] = loss + objective.rl_weight * metrics["pg_loss"]
  return loss, metrics


def _distillation_terms(params, student, h_s, s_layers, teacher_params, batch, weight, *,
                        teacher_graph, objective: Objective, layer_map):
  """(loss, metrics) of the distillation objective against the teacher(s)."""
  labels, mask = batch["response_tokens"], batch["response_mask"]
  if not isinstance(teacher_graph, nnx.GraphDef):
    # Several teachers (gkd.teachers.ensemble.Ensemble) or another tokenizer (gkd.teachers.uld.CrossTokenizer).
    return teacher_graph.loss_terms(head(h_s, student.unembed_kernel()), teacher_params, batch,
                                    weight, objective)
  teacher = nnx.merge(teacher_graph, teacher_params)
  h_t, t_layers = jax.lax.stop_gradient(response_layers(teacher, batch))
  if objective.chunk_size:
    loss, aux = objectives.chunked_distillation_loss(
        h_s, student.unembed_kernel(), h_t, jax.lax.stop_gradient(teacher.unembed_kernel()),
        labels, mask, objective, weight=weight)
  else:
    loss, aux = objectives.distillation_loss(
        head(h_s, student.unembed_kernel()), head(h_t, teacher.unembed_kernel()), labels, mask,
        objective, weight=weight)
  metrics = {"divergence": aux["divergence"], "hard_ce": aux["hard_ce"]}
  if layer_map:
    total = layer_distill.layer_loss(s_layers, t_layers, mask, layer_map, kind=objective.hidden_loss,
                                     projections=params.get("layer_projections"),
                                     reduction=objective.reduction)
  elif objective.hidden_loss:
    total, _ = objectives.hidden_state_loss(h_s, h_t, mask, kind=objective.hidden_loss,
                                            projection=params.get("projection"))
  if objective.hidden_loss:
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


def train_step(state: TrainState, batch, teacher_params, student_base=None, *, student_graph,
               teacher_graph, objective: Objective, optimizer, grad_accum_steps: int = 1,
               sft: bool = False, layer_map: layer_distill.Pairs = (),
               lora_scale: float | None = None):
  """One optimizer update; gradients are accumulated over `grad_accum_steps` micro-batches.

  The denominator (sequences with response tokens, or response tokens) is computed once for
  the whole global batch, so accumulation and data parallelism do not change the loss.
  """
  _, weight = objectives.masked_reduce(jnp.zeros(batch["response_mask"].shape, jnp.float32),
                                       batch["response_mask"], objective.reduction)
  weight = jnp.maximum(weight, 1.0)
  grad_fn = jax.value_and_grad(
      functools.partial(loss_terms, student_graph=student_graph, teacher_graph=teacher_graph,
                        objective=objective, sft=sft, layer_map=layer_map,
                        lora_scale=lora_scale), has_aux=True)

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
