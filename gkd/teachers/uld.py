"""Teachers with another tokenizer: Universal Logit Distillation (Boizard et al., 2024).

"Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss" compares two
next-token distributions over *different* vocabularies by the Wasserstein-1 distance between
them under a cost that ignores which token is which: the closed form is the L1 distance between
the two probability vectors sorted in decreasing order, the smaller one padded with zeros,

  ULD(p_s, p_t) = Σ_i |sort↓(p_s)_i − sort↓(p_t)_i|.

It is 0 exactly when the two distributions are equal up to a permutation of the tokens, so it
says nothing about *which* token to predict; the student's cross-entropy on its own tokens does
that. The loss is the objective's usual mix with ULD in place of the divergence:

  loss = (α·T²·Σ ULD + (1−α)·Σ CE) / weight,   α < 1 required,

with the temperature T dividing both logit sets and CE at T = 1 over every response token.

Alignment (the paper's simple scheme): the teacher scores its own tokenization of the same
prompt + response *text*; the two response token sequences are truncated to the shorter one and
position i of the student is paired with position i of the teacher. Positions past the shorter
tokenization add no ULD term (they still add CE). A character-offset alignment would pair
tokens better where the tokenizations drift apart; it is not implemented.

The text goes student tokens → text → teacher tokens on the host, between sampling and the train
step (`TeacherView`), so on-policy samples and dataset responses are handled alike. Each model
gets the same budgets in its own tokens: data.max_prompt_len (a prompt loses its start, keeping
BOS) and data.max_response_len (a response loses its end).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import objectives, scoring, sharding

TEACHER_KEYS = ("teacher_prompt_tokens", "teacher_prompt_mask", "teacher_response_tokens",
                "teacher_response_mask")


def uld_distance(*, student_logits, teacher_logits, temperature: float = 1.0) -> jax.Array:
  """Per-position ULD [...] between logits [..., Vs] and [..., Vt] (Vs and Vt may differ), f32.

  Past the smaller vocabulary's size m = min(Vs, Vt) the zero-padded side is 0, so the sum
  there is just the other side's tail mass: ULD = Σ_{i≤m} |a_i − b_i| + tail_a + tail_b with
  a, b the top-m probabilities. So only a top-m selection is needed, not a sort of the larger
  vocabulary (at Vs = 101, Vt = 49,152: 1.1 s instead of 19.5 s per [32, 56] batch, forward and
  backward, on the 2-core CPU).
  """
  ps = jax.nn.softmax(jnp.asarray(student_logits, jnp.float32) / temperature, axis=-1)
  pt = jax.nn.softmax(jnp.asarray(teacher_logits, jnp.float32) / temperature, axis=-1)
  m = min(ps.shape[-1], pt.shape[-1])
  a, b = jax.lax.top_k(ps, m)[0], jax.lax.top_k(pt, m)[0]  # decreasing
  tails = (jnp.maximum(jnp.sum(ps, -1) - jnp.sum(a, -1), 0.0)
           + jnp.maximum(jnp.sum(pt, -1) - jnp.sum(b, -1), 0.0))
  return jnp.sum(jnp.abs(a - b), axis=-1) + tails


def aligned_mask(student_mask, teacher_mask) -> jax.Array:
  """[B, L], L = min(Rs, Rt): position i is paired when both sequences have a token i."""
  length = min(student_mask.shape[1], teacher_mask.shape[1])
  n = jnp.minimum(jnp.sum(student_mask, -1), jnp.sum(teacher_mask, -1))
  return jnp.arange(length)[None] < n[:, None]


def uld_loss(student_logits, teacher_logits, labels, student_mask, teacher_mask,
             objective: objectives.Objective, *, weight=None) -> tuple[jax.Array, dict]:
  """(loss, aux) for student logits [B, Rs, Vs] on its response tokens `labels` [B, Rs] and the
  teacher's logits [B, Rt, Vt] on its own tokenization; see the module docstring.

  The ULD term is reduced over the aligned positions, CE over the student's response mask, each
  by `objective.reduction`; `weight` (default: the student mask's) divides both.
  """
  student_mask = jnp.asarray(student_mask, bool)
  valid = aligned_mask(student_mask, jnp.asarray(teacher_mask, bool))
  length = valid.shape[1]
  per = uld_distance(student_logits=student_logits[:, :length],
                     teacher_logits=jax.lax.stop_gradient(teacher_logits[:, :length]),
                     temperature=objective.temperature)
  uld_total, _ = objectives.masked_reduce(per, valid, objective.reduction)
  z = jnp.asarray(student_logits, jnp.float32)
  safe = jnp.clip(jnp.asarray(labels, jnp.int32), 0, z.shape[-1] - 1)
  ce = -scoring.label_logprobs(z, safe)
  ce_total, local_weight = objectives.masked_reduce(ce, student_mask, objective.reduction)
  weight = jnp.maximum(local_weight if weight is None else weight, 1.0)
  loss = (objective.alpha * objective.temperature ** 2 * uld_total
          + (1.0 - objective.alpha) * ce_total) / weight
  return loss, {"divergence": uld_total / weight, "hard_ce": ce_total / weight,
                "aligned_tokens": jnp.sum(valid).astype(jnp.float32)}


@dataclasses.dataclass(frozen=True)
class CrossTokenizer:
  """A teacher with its own tokenizer as the run's static "teacher graph" (its graphdef)."""

  graph: object

  def loss_terms(self, student_logits, teacher_params, batch, weight, objective):
    """(loss, metrics): the teacher scores the batch's `teacher_*` view (see `TeacherView`)."""
    view = {k[len("teacher_"):]: batch[k] for k in TEACHER_KEYS}
    t_logits = scoring.response_logits(nnx.merge(self.graph, teacher_params), view)
    loss, aux = uld_loss(student_logits, jax.lax.stop_gradient(t_logits), batch["response_tokens"],
                         batch["response_mask"], view["response_mask"], objective, weight=weight)
    return loss, dict(aux, loss=loss)


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


class TeacherView:
  """Adds the teacher's tokenization (`TEACHER_KEYS`) to a global batch, on the host.

  Every host fetches the whole batch and re-tokenizes it, then keeps its own shards, so the
  arrays are laid out exactly as the batch is.
  """

  def __init__(self, student_tokenizer, teacher_tokenizer, mesh, *, prompt_len, response_len):
    self.student_tokenizer, self.teacher_tokenizer, self.mesh = (student_tokenizer,
                                                                 teacher_tokenizer, mesh)
    self.lengths = dict(prompt_len=prompt_len, response_len=response_len)

  def __call__(self, batch: dict) -> dict:
    rows = {k: sharding.fetch(batch[k]) for k in scoring.BATCH_KEYS}
    view = retokenize(rows, self.student_tokenizer, self.teacher_tokenizer, **self.lengths)
    place = sharding.batch_sharding(self.mesh)
    return {k: jax.make_array_from_callback(v.shape, place, lambda index, v=v: v[index])
            for k, v in view.items()}


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
