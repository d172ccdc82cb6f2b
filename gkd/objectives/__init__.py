"""The distillation objective: its settings (`Objective`), masked reductions and the losses.

  core.py             Objective, masked_reduce / position_weights, distillation_loss
  chunked.py          the same loss a chunk of positions at a time (no [B, T, V] logits)
  hidden.py           hidden-state alignment terms; layer_distill.py pairs intermediate blocks
  uld.py              Universal Logit Distillation across vocabularies
  policy_gradient.py  the REINFORCE term on graded on-policy samples (RL + GKD)
"""

from gkd.objectives.chunked import chunked_distillation_loss
from gkd.objectives.core import (HIDDEN_KINDS, REDUCTIONS, Objective, distillation_loss,
                                 masked_reduce, position_weights)
from gkd.objectives.hidden import hidden_state_loss

__all__ = ["HIDDEN_KINDS", "REDUCTIONS", "Objective", "chunked_distillation_loss",
           "distillation_loss", "hidden_state_loss", "masked_reduce", "position_weights"]
