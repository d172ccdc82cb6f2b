"""A policy-gradient term on the student's own samples (the GKD paper's RL + GKD combination).

With `objective.rl_weight = w > 0`, an on-policy step also grades each of the student's samples
with its example's task grader (reward r ∈ [0, 1], `gkd.data.graders`) and adds

  w · REINFORCE = −w · Σ_b A_b · mean_t log p_θ(y_bt | y_b<t, x_b) / weight,

reduced over response tokens as the distillation loss is (`objective.reduction`, the same
global denominator). The samples are the ones the distillation loss already trains on: no
extra generation. A_b is r_b minus the mean reward of the *other* sampled rows of the global
batch (the leave-one-out baseline, as RLOO: unbiased, and zero when every sample scores the
same). Rows that are not the student's samples (dataset or teacher responses in a mixed batch)
get A = 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gkd import scoring
from gkd.objectives.core import masked_reduce
from gkd.data import graders


def leave_one_out(rewards, sampled) -> np.ndarray:
  """f32[B] advantages: r_b − mean of the other sampled rows' rewards; 0 on rows not sampled
  and when fewer than two rows are."""
  rewards, sampled = np.asarray(rewards, np.float64), np.asarray(sampled, bool)
  m = int(sampled.sum())
  if m < 2:
    return np.zeros(len(rewards), np.float32)
  total = float(rewards[sampled].sum())
  baseline = (total - rewards) / (m - 1)
  return np.where(sampled, rewards - baseline, 0.0).astype(np.float32)


def loss(student_logits, batch, weight, reduction: str) -> jax.Array:
  """−Σ A·log p(response) reduced as `masked_reduce` says, over `weight`."""
  token_logp = scoring.label_logprobs(student_logits.astype(jnp.float32), batch["response_tokens"])
  total, _ = masked_reduce(-batch["rl_advantage"][:, None] * token_logp,
                                      batch["response_mask"], reduction)
  return total / weight


class Rewarder:
  """Grades decoded student samples against the training examples they answer."""

  def __init__(self, tokenizer, examples: list[dict]):
    self.tokenizer, self.examples = tokenizer, examples
    kinds = {e.get("grader", "numeric") for e in examples}
    if "none" in kinds:
      raise ValueError("objective.rl_weight > 0 needs graded examples; this task's grader is "
                       "'none' (text metrics only).")

  def rewards(self, example_ids, tokens, mask, sampled) -> np.ndarray:
    """f64[B]: each sampled row's grade (0 elsewhere); ids, tokens and mask are global, host-side."""
    out = np.zeros(len(example_ids))
    for b in np.flatnonzero(sampled):
      example = self.examples[int(example_ids[b])]
      text = self.tokenizer.decode(np.asarray(tokens[b])[np.asarray(mask[b], bool)])
      out[b] = graders.grade(example.get("grader", "numeric"), text, example)
    return out
