"""The teacher protocol: what a distillation run asks of whatever it learns from.

A teacher is a frozen dataclass. Its compared fields are static (graphdefs, weights, settings),
so the teacher itself is a static argument of the jitted train step and evaluator and part of
their cache key; its arrays (`params`: a pure dict, a tuple of them, or None) travel beside it
as an ordinary argument, so they are never baked into a compiled program. Host-side helpers
(a store's reader, a tokenizer, a sampler) sit in fields excluded from comparison.

What every kind answers (`Teacher` gives the defaults of a teacher that cannot do a thing):

  loss_terms(student, params, batch, weight, objective)   in jit: (loss, metrics) of the
      student's response positions (`StudentView`) against this teacher
  token_logprobs(params, batch, student)   in jit: log p(y_t | y_<t, x) [B, R] of the batch's
      response tokens, all the sampled-token estimator needs (`scores_tokens` says whether a kind
      can); `student` (a StudentView, or None) is read by a teacher that is the student itself
  eval_logits(params, batch)   in jit: (logits [B, R, V], {"teacher_k": logits}) for the
      evaluator's held-out KLs; only called when `in_eval` is true
  prepare(batch, keys, mesh)   on the host, before the step: arrays the teacher reads from the
      batch (a store's targets, another tokenizer's view, a remote scorer's log-probs). `keys`
      holds the global rows' "example_id" and "sample" key (example_id × n + sample index)
  respond(params, batch, keys, rng, sampler)   on the host: (tokens, mask) of the teacher's own
      responses (sequence-level KD); by default drawn from `generator`'s model
  generator(params)   (graphdef, params) of a model that samples as the teacher, or None
  modules(params)   the teacher's models (for sizes and sequence limits); [] without a model
  moves   true for a teacher that training moves (an EMA of the student): the run keeps its
      params in the train state (checkpointed), and after each update the step replaces them
      with `follow(params, the student's new params)`
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import numpy as np
from flax import nnx

from gkd import scoring, sharding
from gkd.errors import ConfigError


class StudentView(NamedTuple):
  """The student at the batch's response positions, as a teacher's loss reads it.

  model: the student module; hidden: its final hidden states [B, R, D]; layers: each block's
  output [B, R, D] (unused ones are compiled away); params: the train state's params (the
  student's, or its LoRA adapters, and any learned projections of hidden-state terms).
  """

  model: nnx.Module
  hidden: jax.Array
  layers: tuple
  params: Any

  def logits(self) -> jax.Array:
    """The student's logits [B, R, V] (float32)."""
    return scoring.head(self.hidden, self.model.unembed_kernel())


@dataclasses.dataclass(frozen=True)
class Teacher:
  """Defaults of the protocol (see the module docstring); each kind overrides what it can do."""

  kind: ClassVar[str] = ""
  in_eval: ClassVar[bool] = False  # the evaluator measures held-out KLs against it
  fixed_responses: ClassVar[bool] = False  # its responses are stored already: nothing to cache
  scores_tokens: ClassVar[bool] = False  # it implements token_logprobs
  calls_service: ClassVar[bool] = False  # prepare() may raise errors.ServiceError

  @classmethod
  def check(cls, config) -> list[str]:
    """Problems with the config's use of this kind, each naming its field (needs no disk)."""
    del config
    return []

  def loss_terms(self, student: StudentView, params, batch, weight, objective):
    raise NotImplementedError(f"a {self.kind} teacher has no loss")

  def token_logprobs(self, params, batch, student: StudentView | None = None) -> jax.Array:
    raise ConfigError(f"a {self.kind} teacher cannot score the student's tokens.")

  def eval_logits(self, params, batch):
    raise NotImplementedError(f"a {self.kind} teacher gives no logits for evaluation")

  def prepare(self, batch: dict, keys: np.ndarray, mesh) -> dict:
    del batch, keys, mesh
    return {}

  def generator(self, params):
    del params
    return None

  def respond(self, params, batch: dict, keys: np.ndarray, rng, *, sampler):
    """The teacher's responses to the batch's prompts, drawn with `sampler` (a
    gkd.sampling.Sampler over `generator`'s graphdef)."""
    del keys
    graph_params = self.generator(params)
    if graph_params is None:
      raise ConfigError(f"a {self.kind} teacher cannot generate responses (mix.teacher).")
    out = sampler(graph_params[1], batch["prompt_tokens"], batch["prompt_mask"], rng=rng,
                  max_new_tokens=batch["response_tokens"].shape[1])
    return out.tokens, out.mask

  def modules(self, params) -> list[nnx.Module]:
    del params
    return []

  @property
  def moves(self) -> bool:
    return False

  def follow(self, params, student_params):
    raise NotImplementedError(f"a {self.kind} teacher does not move with training")

  def describe(self) -> str:
    return f"a {self.kind} teacher"


def place(model: nnx.Module, mesh) -> tuple[nnx.GraphDef, dict]:
  """A model's (graphdef, pure-dict params), the params placed on `mesh` (replicated or FSDP)."""
  graph, state = nnx.split(model)
  pure = state.to_pure_dict()
  return graph, jax.device_put(pure, sharding.param_shardings(mesh, pure))
