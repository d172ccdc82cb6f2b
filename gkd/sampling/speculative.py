"""Speculative knowledge distillation's sampler (SKD; Xu et al., ICLR 2025).

The student proposes every token, as in on-policy sampling; the teacher, decoding the same
prefix beside it with its own KV cache, keeps a proposal that lies in its own top-K at that
position and otherwise replaces it with a token drawn from its own distribution. Early in
training most proposals are replaced and the samples look like the teacher's (SeqKD-like); as
the student improves, fewer are, and the samples become the student's own (on-policy). Both
models run inside one jitted prefill and one `lax.while_loop`, one forward each per decode
step, and nothing goes back to the host per token.

The student's proposal uses exactly the key schedule of `gkd.sampling.Sampler`, so with
K = vocabulary size (nothing is ever replaced) the samples equal plain student sampling.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from gkd.models.llama import batch_full, default_positions
from gkd.sampling import SamplerSettings, choose


class SpeculativeOutput(NamedTuple):
  """tokens int32[B,N] and mask bool[B,N] as `gkd.sampling.SampleOutput`; replaced bool[B,N]:
  True where the teacher replaced the student's proposal (False outside the mask)."""

  tokens: jax.Array
  mask: jax.Array
  replaced: jax.Array

  def replacement_rate(self) -> jax.Array:
    """The fraction of real (masked-in) tokens that the teacher replaced."""
    return jnp.sum(self.replaced) / jnp.maximum(jnp.sum(self.mask), 1)


@dataclasses.dataclass(frozen=True)
class SpeculativeSettings:
  """Static settings. `student` samples the proposals (T=1 and no top-k/top-p for on-policy
  distillation); `teacher_temperature` draws the replacements (0: the teacher's argmax)."""

  student: SamplerSettings
  topk: int
  teacher_temperature: float = 1.0

  def __post_init__(self):
    if self.topk < 1:
      raise ValueError(f"sampling.speculative_topk must be >= 1 to speculate, got {self.topk}.")


class SpeculativeSampler:
  """Built once per run from both models' graphdefs; parameters come per call."""

  def __init__(self, student_graphdef, teacher_graphdef, *, topk: int, eos_id: int,
               pad_id: int | None = None, temperature: float = 1.0, teacher_temperature: float = 1.0):
    self.graphdefs = (student_graphdef, teacher_graphdef)
    self.settings = dict(topk=int(topk), teacher_temperature=float(teacher_temperature))
    self.student = dict(temperature=float(temperature), eos_id=int(eos_id),
                        pad_id=int(eos_id if pad_id is None else pad_id))

  def __call__(self, student_params, teacher_params, prompt_tokens, prompt_mask, *, rng,
               max_new_tokens: int) -> SpeculativeOutput:
    settings = SpeculativeSettings(SamplerSettings(int(max_new_tokens), **self.student),
                                   **self.settings)
    return _speculative_jit(*self.graphdefs, settings, student_params, teacher_params,
                            jnp.asarray(prompt_tokens, jnp.int32), jnp.asarray(prompt_mask, bool), rng)


def _verify(proposal: jax.Array, teacher_logits: jax.Array, key: jax.Array, s: SpeculativeSettings):
  """The kept or replaced token per row, and whether it was replaced."""
  kth = jax.lax.top_k(teacher_logits, s.topk)[0][:, -1]
  proposed = jnp.take_along_axis(teacher_logits, proposal[:, None], axis=-1)[:, 0]
  replace = proposed < kth  # ties with the K-th logit count as inside the top-K
  teacher_settings = SamplerSettings(1, temperature=s.teacher_temperature)
  drawn, _ = choose(teacher_logits, key, teacher_settings)
  return jnp.where(replace, drawn, proposal), replace


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _speculative_jit(student_graphdef, teacher_graphdef, s: SpeculativeSettings, student_state,
                     teacher_state, prompt, pmask, rng) -> SpeculativeOutput:
  models = (nnx.merge(student_graphdef, student_state), nnx.merge(teacher_graphdef, teacher_state))
  b, p = prompt.shape
  n = s.student.max_new_tokens
  first_pos = jnp.sum(pmask, axis=1, dtype=jnp.int32)
  caches, last = [], []
  for model in models:
    cache = model.init_cache(b, p + n, like=prompt)
    h, cache = model.forward_cached(prompt, cache, positions=default_positions(pmask),
                                    attention_mask=pmask)
    caches.append(cache)
    last.append(h[:, -1])

  def pick(hs, rng):
    rng, key = jax.random.split(rng)  # the student's key: as in gkd.sampling
    proposal, _ = choose(models[0].next_token_logits(hs[0]), key, s.student)
    tok, replaced = _verify(proposal, models[1].next_token_logits(hs[1]),
                            jax.random.fold_in(key, 1), s)
    return tok, replaced, rng

  tok, replaced, rng = pick(last, rng)
  tokens = batch_full(prompt, (b, n), s.student.pad_id, jnp.int32).at[:, 0].set(tok)
  swapped = batch_full(prompt, (b, n), False, bool).at[:, 0].set(replaced)
  mask = batch_full(prompt, (b, n), False, bool).at[:, 0].set(True)
  done = tok == s.student.eos_id

  def cond(carry):
    return (carry[0] < n) & ~jnp.all(carry[4])

  def body(carry):
    step, tokens, mask, swapped, done, caches, rng = carry
    prev = jax.lax.dynamic_index_in_dim(tokens, step - 1, axis=1)
    hs, new_caches = [], []
    for model, cache in zip(models, caches):
      h, cache = model.forward_cached(prev, cache, positions=(first_pos + step - 1)[:, None])
      hs.append(h[:, 0])
      new_caches.append(cache)
    tok, replaced, rng = pick(hs, rng)
    live = ~done
    tok = jnp.where(live, tok, s.student.pad_id)
    tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, step))
    swapped = jax.lax.dynamic_update_slice(swapped, (live & replaced)[:, None], (0, step))
    mask = jax.lax.dynamic_update_slice(mask, live[:, None], (0, step))
    done = done | (live & (tok == s.student.eos_id))
    return step + 1, tokens, mask, swapped, done, tuple(new_caches), rng

  carry = (jnp.ones((), jnp.int32), tokens, mask, swapped, done, tuple(caches), rng)
  _, tokens, mask, swapped, _, _, _ = jax.lax.while_loop(cond, body, carry)
  return SpeculativeOutput(tokens, mask, swapped)
