"""One teacher model run alongside the student: the common case.

The teacher scores the batch's exact sequences under stop_gradient. Its loss is the objective's
divergence between the two models' response logits: formed whole, or with
`objective.chunk_size` a chunk of positions at a time from the hidden states and the output
tables (gkd.objectives.chunked), so neither model's [B, R, V] logits are held. A hidden-state
term (`objective.hidden_loss`) compares the last hidden states, or with `layer_map` pairs of
block outputs (gkd.objectives.layer_distill); its projections live in the student's params.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from gkd import objectives, scoring
from gkd.objectives import chunked, hidden, layer_distill
from gkd.teachers.base import StudentView, Teacher, place


@dataclasses.dataclass(frozen=True)
class Live(Teacher):
  """A teacher model: its graphdef (static) and, for intermediate-layer terms, the layer map."""

  graph: nnx.GraphDef
  layer_map: layer_distill.Pairs = ()

  kind = "live"
  in_eval = True

  @classmethod
  def build(cls, config, built, mesh):
    (teacher,), student = built.teachers, built.student
    layer_map = layer_distill.parse(config.objective.get("layer_map", ""))
    layer_distill.check(layer_map, student.config.n_layers, teacher.config.n_layers)
    graph, params = place(teacher, mesh)
    return cls(graph, layer_map), params

  def _model(self, params) -> nnx.Module:
    return nnx.merge(self.graph, params)

  def loss_terms(self, student: StudentView, params, batch, weight, objective):
    teacher = self._model(params)
    h_t, t_layers = jax.lax.stop_gradient(scoring.response_layers(teacher, batch))
    labels, mask = batch["response_tokens"], batch["response_mask"]
    t_kernel = jax.lax.stop_gradient(teacher.unembed_kernel())
    if objective.chunk_size:
      loss, aux = chunked.chunked_distillation_loss(
          student.hidden, student.model.unembed_kernel(), h_t, t_kernel, labels, mask, objective,
          weight=weight)
    else:
      loss, aux = objectives.distillation_loss(student.logits(), scoring.head(h_t, t_kernel),
                                               labels, mask, objective, weight=weight)
    metrics = {"divergence": aux["divergence"], "hard_ce": aux["hard_ce"]}
    if objective.hidden_loss:
      if self.layer_map:
        total = layer_distill.layer_loss(
            student.layers, t_layers, mask, self.layer_map, kind=objective.hidden_loss,
            projections=student.params.get("layer_projections"), reduction=objective.reduction)
      else:
        total, _ = hidden.hidden_state_loss(student.hidden, h_t, mask, kind=objective.hidden_loss,
                                            projection=student.params.get("projection"))
      metrics["hidden_loss"] = total / weight
      loss = loss + objective.hidden_weight * metrics["hidden_loss"]
    metrics["loss"] = loss
    return loss, metrics

  def token_logprobs(self, params, batch):
    return scoring.token_scores(self._model(params), batch)

  def eval_logits(self, params, batch):
    return scoring.response_logits(self._model(params), batch), {}

  def generator(self, params):
    return self.graph, params

  def modules(self, params):
    return [self._model(params)]

  def describe(self) -> str:
    return "a teacher model"
