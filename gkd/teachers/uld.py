"""A teacher with another tokenizer, distilled by Universal Logit Distillation
(objective.cross_tokenizer='uld'; the loss is gkd.objectives.uld).

Alignment (the paper's simple scheme): the teacher scores its own tokenization of the same
prompt + response *text*; the two response token sequences are truncated to the shorter one and
position i of the student is paired with position i of the teacher. Positions past the shorter
tokenization add no ULD term (they still add CE). A character-offset alignment would pair
tokens better where the tokenizations drift apart; it is not implemented.

The text goes student tokens → text → teacher tokens on the host, between sampling and the train
step (`CrossTokenizer.prepare`), so on-policy samples and dataset responses are handled alike.
Each model gets the same budgets in its own tokens: data.max_prompt_len (a prompt loses its
start, keeping BOS) and data.max_response_len (a response loses its end). The teacher neither
generates nor enters eval (KLs across vocabularies are undefined).
"""


from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx

from gkd import scoring, sharding
from gkd.objectives.uld import uld_loss
from gkd.teachers.base import StudentView, Teacher, place

TEACHER_KEYS = ("teacher_prompt_tokens", "teacher_prompt_mask", "teacher_response_tokens",
                "teacher_response_mask")


@dataclasses.dataclass(frozen=True)
class CrossTokenizer(Teacher):
  """A teacher model with its own tokenizer: its graphdef (static) and the two tokenizers with
  the length budgets (host side, for `prepare`)."""

  graph: nnx.GraphDef
  student_tokenizer: Any = dataclasses.field(compare=False, repr=False, default=None)
  teacher_tokenizer: Any = dataclasses.field(compare=False, repr=False, default=None)
  lengths: dict = dataclasses.field(compare=False, repr=False, default_factory=dict)

  kind = "cross-tokenizer"

  @classmethod
  def check(cls, config) -> list[str]:
    return check(config)

  @classmethod
  def build(cls, config, built, mesh):
    graph, params = place(built.teachers[0], mesh)
    lengths = dict(prompt_len=config.data.max_prompt_len, response_len=config.data.max_response_len)
    return cls(graph, built.tokenizer, built.teacher_tokenizer, lengths), params

  def loss_terms(self, student: StudentView, params, batch, weight, objective):
    """(loss, metrics): the teacher scores the batch's `teacher_*` view (see `prepare`)."""
    view = {k[len("teacher_"):]: batch[k] for k in TEACHER_KEYS}
    t_logits = scoring.response_logits(nnx.merge(self.graph, params), view)
    loss, aux = uld_loss(student.logits(), jax.lax.stop_gradient(t_logits),
                         batch["response_tokens"], batch["response_mask"], view["response_mask"],
                         objective, weight=weight)
    return loss, dict(aux, loss=loss)

  def prepare(self, batch: dict, keys, mesh) -> dict:
    """The teacher's tokenization of the whole global batch (`TEACHER_KEYS`), made on every
    host and placed as the batch is."""
    del keys
    rows = {k: sharding.fetch(batch[k]) for k in scoring.BATCH_KEYS}
    view = retokenize(rows, self.student_tokenizer, self.teacher_tokenizer, **self.lengths)
    return sharding.place_rows(mesh, view)

  def modules(self, params):
    return [nnx.merge(self.graph, params)]

  def describe(self) -> str:
    return "a teacher with another tokenizer (ULD)"


def retokenize(rows: dict, student_tokenizer, teacher_tokenizer, *, prompt_len: int,
               response_len: int) -> dict:
  """The teacher's own tokenization of a batch's text: NumPy `TEACHER_KEYS` arrays, [B, P] / [B, R].

  Prompts are decoded without special tokens and re-encoded with the teacher's BOS, left-padded
  (cut at the start, keeping BOS); a response that ends in the student's EOS ends in the
  teacher's, right-padded (cut at the end).
  """
  t = teacher_tokenizer
  b = len(rows["prompt_tokens"])
  out = {"teacher_prompt_tokens": np.full((b, prompt_len), t.pad_id, np.int32),
         "teacher_prompt_mask": np.zeros((b, prompt_len), bool),
         "teacher_response_tokens": np.full((b, response_len), t.pad_id, np.int32),
         "teacher_response_mask": np.zeros((b, response_len), bool)}
  for r in range(b):
    prompt = student_tokenizer.decode(rows["prompt_tokens"][r][rows["prompt_mask"][r]])
    ids = t.encode(prompt, add_bos=True)
    if len(ids) > prompt_len:
      head = ids[:1] if t.bos_id is not None else []
      ids = head + ids[len(ids) - (prompt_len - len(head)):]
    if ids:
      out["teacher_prompt_tokens"][r, -len(ids):] = ids
      out["teacher_prompt_mask"][r, -len(ids):] = True
    response = rows["response_tokens"][r][rows["response_mask"][r]]
    ends = len(response) > 0 and response[-1] == student_tokenizer.eos_id
    ids = (t.encode(student_tokenizer.decode(response)) + ([t.eos_id] if ends else []))
    ids = ids[:response_len]
    out["teacher_response_tokens"][r, :len(ids)] = ids
    out["teacher_response_mask"][r, :len(ids)] = True
  return out


def check(config) -> list[str]:
  """Problems with `objective.cross_tokenizer` (messages naming the fields); empty when fine."""
  mode = config.objective.get("cross_tokenizer", "")
  if mode not in ("", "uld"):
    return [f"objective.cross_tokenizer={mode!r}; expected '' (one shared vocabulary) or 'uld'."]
  if mode != "uld" or config.mode != "gkd":
    return []
  obj, why = config.objective, "objective.cross_tokenizer='uld'"
  teachers = list(config.get("teachers", None) or [])
  teacher = teachers[0] if len(teachers) == 1 else config.teacher
  problems = [
      (len(teachers) > 1, f"{why} takes one teacher; config.teachers lists {len(teachers)}."),
      (teacher.source not in ("gguf", "pretrained"),
       f"{why} needs a teacher that ships its own tokenizer (source 'gguf' or 'pretrained'), "
       f"got teacher.source={teacher.source!r}."),
      (config.student.source == "derive", f"{why}: a student cannot derive from a teacher with "
       "another vocabulary; set student.source."),
      (not obj.alpha < 1, f"{why} needs objective.alpha < 1: ULD matches sorted probabilities "
       "only, and the student's CE (weight 1 − alpha) is what ties them to its tokens."),
      (config.mix.teacher > 0, f"{why} does not take teacher generations (mix.teacher="
       f"{config.mix.teacher}): use dataset or on-policy responses."),
      (config.data.chat_template, f"{why} does not re-render chat templates; set "
       "data.chat_template=False."),
  ] + [(bool(obj[k]), f"{why} does not combine with objective.{k}={obj[k]!r}.")
       for k in ("teacher_topk", "chunk_size", "hidden_loss")]
  return [message for bad, message in problems if bad]
