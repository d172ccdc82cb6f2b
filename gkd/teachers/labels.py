"""No teacher: the batch's own response tokens are the targets (supervised fine-tuning, and an
offline store that holds responses without log-probs).

The loss is the student's cross-entropy on the response tokens, reduced as
`objective.reduction` says over the step's global denominator.
"""

from __future__ import annotations

import dataclasses

import optax

from gkd import objectives
from gkd.teachers.base import StudentView, Teacher


def hard_ce_terms(student_logits, batch, weight, objective):
  """(loss, metrics) of the masked cross-entropy of the batch's response tokens."""
  ce = optax.softmax_cross_entropy_with_integer_labels(student_logits, batch["response_tokens"])
  total, _ = objectives.masked_reduce(ce, batch["response_mask"], objective.reduction)
  loss = total / weight
  return loss, {"loss": loss, "hard_ce": loss}


@dataclasses.dataclass(frozen=True)
class Labels(Teacher):
  """The references as the only teacher (mode='sft')."""

  kind = "labels"

  @classmethod
  def build(cls, config, built, mesh):
    del config, built, mesh
    return cls(), None

  def loss_terms(self, student: StudentView, params, batch, weight, objective):
    del params
    return hard_ce_terms(student.logits(), batch, weight, objective)

  def describe(self) -> str:
    return "the references (no teacher)"
