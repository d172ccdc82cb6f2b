"""On-policy self-distillation (OPSD): the student, shown privileged context, is its own teacher
(`teacher.source = "self"`).

There is no second model. The teacher is the student reading a prompt that holds what the
student is not shown, such as the reference solution, rendered from `teacher.self_template`
with these placeholders:

  {prompt}     the example's prompt (the question the student sees)
  {reference}  the example's reference response
  {answer}     the example's final answer (tasks that have one; "" otherwise)

e.g. "Reference solution: {reference}\\n{prompt}". With data.chat_template the rendered text is
the user message (the last one of an example's own chat). The student reads only its own
prompt. Both score the same response tokens (the student's samples, on-policy), and the
objective's divergence between the two is the loss, with gradients through the student's side
only. `prepare` renders and tokenizes the teacher's prompt for each row on the host, left-padded
to `teacher.self_prompt_len` tokens (0: data.max_prompt_len + data.max_response_len; a longer
one loses its start, keeping BOS), as batch keys teacher_prompt_tokens / teacher_prompt_mask.

Which weights read the privileged prompt (`teacher.self_weights`):
  current  the student's own current weights under stop_gradient: one set of weights in memory
           (the teacher reads them from the StudentView)
  initial  a frozen copy of the student's weights at the start of the run
  ema      an exponential moving average of the student's weights, decay `teacher.self_ema_decay`
           per step, starting at the initial weights; it lives in the train state, so it is
           checkpointed and a resumed run repeats an uninterrupted one
"""

from __future__ import annotations

import dataclasses
import json
import string
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import scoring, sharding
from gkd.data import pipeline
from gkd.errors import ConfigError
from gkd.teachers.base import StudentView, Teacher, place
from gkd.teachers.live import logit_terms

WEIGHTS = ("current", "initial", "ema")
PLACEHOLDERS = ("prompt", "reference", "answer")
TEACHER_KEYS = ("teacher_prompt_tokens", "teacher_prompt_mask")


def teacher_prompt_len(config) -> int:
  """The privileged teacher prompt's length in tokens: teacher.self_prompt_len, or (0) room for
  the whole prompt and reference, data.max_prompt_len + data.max_response_len."""
  d = config.data
  return int(config.teacher.self_prompt_len) or d.max_prompt_len + d.max_response_len


class PrivilegedPrompts:
  """Renders and tokenizes each training example's teacher prompt (host side, cached by id)."""

  def __init__(self, template: str, examples: list[dict], tokenizer, *, length: int,
               chat_template: bool):
    self.template, self.examples, self.tokenizer = template, examples, tokenizer
    self.length, self.chat_template = length, chat_template
    self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def text(self, example: dict, prompt: str | None = None) -> str:
    """The template rendered for one example (raw text, before any chat template), around
    `prompt` (default: the example's own)."""
    return self.template.format(prompt=example["prompt"] if prompt is None else prompt,
                                reference=example["response"], answer=example.get("answer", ""))

  def row(self, example_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, mask) [length] of one example's teacher prompt, left-padded."""
    if example_id not in self._rows:
      example = self.examples[example_id]
      messages = None
      if example.get("messages"):  # the example's own chat: the last user turn gets the template
        messages = json.loads(example["messages"])
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[last] = dict(messages[last], content=self.text(example, messages[last]["content"]))
      row = pipeline.encode_example(self.tokenizer, self.text(example), "",
                                    max_prompt_len=self.length, max_response_len=1,
                                    chat_template=self.chat_template, example_id=example_id,
                                    messages=messages)
      self._rows[example_id] = (row["prompt_tokens"], row["prompt_mask"])
    return self._rows[example_id]

  def batch(self, example_ids) -> dict:
    """TEACHER_KEYS for a batch's rows (NumPy [B, length])."""
    ids = [int(i) for i in example_ids]
    if min(ids) < 0:
      raise ValueError("self-distillation needs every row's example (a padding row has none).")
    tokens, mask = zip(*(self.row(i) for i in ids))
    return {"teacher_prompt_tokens": np.stack(tokens), "teacher_prompt_mask": np.stack(mask)}


@dataclasses.dataclass(frozen=True)
class SelfDistill(Teacher):
  """The student as its own teacher: which weights, the student's graphdef (for the initial and
  EMA copies) and, host side, the privileged prompts."""

  weights: str
  graph: Any = None
  ema_decay: float = 0.0
  prompts: PrivilegedPrompts | None = dataclasses.field(compare=False, repr=False, default=None)

  kind = "self"
  scores_tokens = True

  @classmethod
  def check(cls, config) -> list[str]:
    return check(config)

  @classmethod
  def build(cls, config, built, mesh):
    t, d = config.teacher, config.data
    length = teacher_prompt_len(config)
    examples = pipeline.eval_examples_for_config(config, "train", d.num_train_examples or None)
    prompts = PrivilegedPrompts(t.self_template, examples, built.tokenizer, length=length,
                                chat_template=d.chat_template)
    limit = built.student.config.max_seq_len
    if length + d.max_response_len > limit:
      raise ConfigError(f"teacher.self_prompt_len={length} + data.max_response_len="
                        f"{d.max_response_len} exceeds the student's max_seq_len={limit}.")
    if t.self_weights == "current":  # no copy: the teacher reads the student's params
      return cls("current", prompts=prompts), None
    graph, params = place(built.student, mesh)
    params = jax.tree.map(jnp.copy, params)  # its own buffers: the student's are donated
    return cls(t.self_weights, graph, float(t.self_ema_decay), prompts), params

  @property
  def moves(self) -> bool:
    return self.weights == "ema"

  def follow(self, params, student_params):
    """The EMA after one step: d·ema + (1 − d)·student, in the EMA's dtype."""
    d = self.ema_decay
    return jax.tree.map(lambda e, s: (d * e + (1.0 - d) * s.astype(e.dtype)).astype(e.dtype),
                        params, student_params)

  def _teacher_hidden(self, params, batch, student: StudentView | None):
    """(final hidden states [B, R, D] on the privileged prompt, output table), no gradient."""
    if self.weights == "current":
      if student is None:
        raise ValueError("a current-weights self teacher reads the student: pass its StudentView.")
      model = student.model
    else:
      model = nnx.merge(self.graph, params)
    view = {"prompt_tokens": batch["teacher_prompt_tokens"],
            "prompt_mask": batch["teacher_prompt_mask"],
            "response_tokens": batch["response_tokens"], "response_mask": batch["response_mask"]}
    hidden = scoring.response_layers(model, view)[0]
    return jax.lax.stop_gradient(hidden), jax.lax.stop_gradient(model.unembed_kernel())

  def loss_terms(self, student: StudentView, params, batch, weight, objective):
    hidden, kernel = self._teacher_hidden(params, batch, student)
    return logit_terms(student, hidden, kernel, batch, weight, objective)

  def token_logprobs(self, params, batch, student=None):
    hidden, kernel = self._teacher_hidden(params, batch, student)
    return scoring.label_logprobs(scoring.head(hidden, kernel), batch["response_tokens"])

  def prepare(self, batch: dict, keys, mesh) -> dict:
    """The teacher's prompts for the global batch's rows, placed as the batch is."""
    del batch
    return sharding.place_rows(mesh, self.prompts.batch(keys["example_id"]))

  def describe(self) -> str:
    return f"the student itself with privileged context ({self.weights} weights)"


def check(config) -> list[str]:
  """Problems with teacher.source='self' (messages naming the fields); empty when not chosen."""
  t = config.teacher
  if config.mode != "gkd" or t.source != "self":
    return []
  why = "teacher.source='self'"
  template = t.get("self_template", "")
  try:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
  except ValueError as e:
    return [f"teacher.self_template={template!r} is not a valid template ({e})."]
  problems = [
      (bool(list(config.get("teachers", None) or [])), f"{why} is the one teacher: leave "
       "config.teachers empty."),
      (t.get("self_weights") not in WEIGHTS,
       f"teacher.self_weights={t.get('self_weights')!r}; expected one of {WEIGHTS}."),
      (not 0.0 <= float(t.get("self_ema_decay", 0.0)) < 1.0,
       f"teacher.self_ema_decay={t.get('self_ema_decay')!r} must lie in [0, 1)."),
      ("prompt" not in names or not names <= set(PLACEHOLDERS),
       f"teacher.self_template={template!r} must hold {{prompt}} and may hold only "
       f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}."),
      (int(t.get("self_prompt_len", 0)) < 0, "teacher.self_prompt_len must be >= 0."),
      (config.mix.teacher > 0 or config.sampling.speculative_topk > 0,
       f"{why} does not generate: set mix.teacher=0 and sampling.speculative_topk=0."),
      (config.student.source == "derive", f"{why}: there is no teacher model to derive the "
       "student from; set student.source."),
      (bool(config.get("teacher_store", "")) or bool(config.objective.hidden_loss)
       or config.objective.get("cross_tokenizer", ""), f"{why} does not combine with "
       "teacher_store, objective.hidden_loss or objective.cross_tokenizer."),
  ]
  return [message for bad, message in problems if bad]
