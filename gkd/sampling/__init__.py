"""Jit-compiled autoregressive sampling with a KV cache.

One compiled program per static shape set: a prefill over the left-padded prompts, then a
`lax.while_loop` that decodes one token per step for the whole batch and stops as soon as every
row has emitted EOS. Parameters and the rng are arguments of the jitted function (never closed
over); the graphdef and the sampler settings are static, so repeated calls with the same shapes
reuse the compiled program. Nothing happens host-side per token, so inputs sharded over a mesh
batch axis stay sharded.

`Sampler` is the object a training run builds once per model: it holds the graphdef and the
token ids and takes new parameters on every call (no split/merge round trip). `sample(model,
...)` is the one-off functional form, for notebooks and tests.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import scoring, sharding
from gkd.models.llama import batch_full, default_positions


class SampleOutput(NamedTuple):
  """tokens int32[B,N]; mask bool[B,N] (True up to and including the first EOS);
  logprobs float32[B,N] (0 where mask is False), or None unless asked for: computing them
  costs a vocabulary-wide log-softmax per decode step."""

  tokens: jax.Array
  mask: jax.Array
  logprobs: jax.Array | None


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """Static sampler settings (part of the compilation key)."""

  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  eos_id: int = 0
  pad_id: int = 0
  use_cache: bool = True
  return_logprobs: bool = False

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}.")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")


def sample(model: nnx.Module, prompt_tokens: jax.Array, prompt_mask: jax.Array, *, rng: jax.Array,
           max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           eos_id: int, pad_id: int | None = None, use_cache: bool = True) -> SampleOutput:
  """Samples `max_new_tokens` continuations of left-padded prompts.

  Args:
    model: a `Llama` (anything with `forward_cached`, `hidden_states`, `logits`, `init_cache`).
    prompt_tokens: int32[B,P], left-padded. prompt_mask: bool[B,P], True on real tokens.
    rng: a jax PRNG key.
    temperature: 0 means greedy (argmax). top_k: 0 = off. top_p: 1.0 = off.
    eos_id: the token that ends a row. pad_id: fills tokens after a row's EOS (default eos_id).
    use_cache: False recomputes the whole fixed-size [B, P+N] sequence each step (no KV cache);
      only useful as a baseline for benchmarks and tests.

  Returns:
    SampleOutput. `logprobs` are the log-probabilities of the chosen tokens under the
    distribution actually sampled from, i.e. after temperature, top-k and top-p (so top_k=1
    gives 0). Greedy (temperature=0) returns the log-prob under the unmodified T=1 softmax.
    On-policy distillation wants temperature=1, top_k=0, top_p=1, where both coincide.
  """
  graphdef, state = nnx.split(model)
  sampler = Sampler(graphdef, eos_id=eos_id, pad_id=pad_id, top_k=top_k, top_p=top_p,
                    use_cache=use_cache, return_logprobs=True)
  return sampler(state, prompt_tokens, prompt_mask, rng=rng, max_new_tokens=max_new_tokens,
                 temperature=temperature)


class Sampler:
  """Samples from one model architecture with fixed settings; parameters come per call.

  Build it once per run and role (the student's on-policy sampler, the teacher's, the
  evaluator's greedy decoder) and call it with the current parameters: a pure dict or an
  `nnx.State` matching `graphdef`. `max_new_tokens` and `temperature` may change per call
  (each distinct value compiles once).
  """

  def __init__(self, graphdef, *, eos_id: int, pad_id: int | None = None, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, use_cache: bool = True,
               return_logprobs: bool = False):
    self.graphdef = graphdef
    self.settings = dict(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                         eos_id=int(eos_id), pad_id=int(eos_id if pad_id is None else pad_id),
                         use_cache=bool(use_cache), return_logprobs=bool(return_logprobs))

  def __call__(self, params, prompt_tokens: jax.Array, prompt_mask: jax.Array, *, rng: jax.Array,
               max_new_tokens: int, temperature: float | None = None) -> SampleOutput:
    overrides = {"temperature": float(temperature)} if temperature is not None else {}
    settings = SamplerSettings(int(max_new_tokens), **{**self.settings, **overrides})
    return _sample_jit(self.graphdef, settings, params, jnp.asarray(prompt_tokens, jnp.int32),
                       jnp.asarray(prompt_mask, bool), rng)


def _argmax(x: jax.Array) -> jax.Array:
  """jnp.argmax over the last axis (the first maximum), as two plain reductions.

  XLA's CPU backend runs jnp.argmax's fused (value, index) reduction far slower than a max
  followed by a min over the matching indices, and over a large vocabulary that showed in the
  sampler's time (experiments/README.md, "Figures behind code choices"). (A NaN row, which has
  no matching index, gives the last token.)
  """
  top = jnp.max(x, axis=-1, keepdims=True)
  idx = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  return jnp.minimum(jnp.min(jnp.where(x == top, idx, x.shape[-1]), axis=-1), x.shape[-1] - 1)


_CDF_BLOCK = 128  # vocabulary entries per block of the two-level inverse CDF


def _inverse_cdf(logits: jax.Array, key: jax.Array) -> jax.Array:
  """One draw per row from softmax(logits) [B,V], by inverting the CDF with one uniform per row.

  Gumbel-max (jax.random.categorical) needs V random numbers per row, and generating them is a
  visible share of the sampler's time at a large vocabulary (experiments/README.md, "Figures
  behind code choices"); this draw needs one. The CDF is searched in two levels, so no V-long cumulative sum is needed: the block of 128
  entries whose cumulative mass first exceeds u, then the entry within it. Entries with zero
  mass (−inf logits, e.g. cut by top-k or top-p) are never chosen: where float rounding leaves
  u past the last cumulative sum, the last entry with mass is taken. A row of NaNs gives a
  valid but meaningless index.
  """
  b, v = logits.shape
  n_blocks = -(-v // _CDF_BLOCK)
  weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))  # unnormalized, −inf → 0
  weights = jnp.pad(weights, ((0, 0), (0, n_blocks * _CDF_BLOCK - v)))
  weights = weights.reshape(b, n_blocks, _CDF_BLOCK)
  mass = jnp.sum(weights, axis=-1)  # [B, n_blocks]
  cum = jnp.cumsum(mass, axis=-1)
  u = jax.random.uniform(key, (b, 1), jnp.float32) * cum[:, -1:]
  block = _first_above(cum, u, mass)
  rest = u - jnp.take_along_axis(cum - mass, block[:, None], axis=-1)
  inner = jnp.take_along_axis(weights, block[:, None, None], axis=1)[:, 0]  # [B, block]
  return block * _CDF_BLOCK + _first_above(jnp.cumsum(inner, axis=-1), rest, inner)


def _first_above(cum: jax.Array, u: jax.Array, mass: jax.Array) -> jax.Array:
  """The first index whose cumulative sum exceeds u [B,1], at most the last one with mass."""
  idx = jax.lax.broadcasted_iota(jnp.int32, cum.shape, 1)
  last_with_mass = jnp.max(jnp.where(mass > 0, idx, 0), axis=-1)
  return jnp.minimum(jnp.sum(cum <= u, axis=-1, dtype=jnp.int32), last_with_mass)


def choose(logits: jax.Array, key: jax.Array, s: SamplerSettings) -> tuple[jax.Array, jax.Array | None]:
  """Picks one token per row from float32 logits [B,V]: (tokens, their log-probs or None)."""
  if s.temperature == 0:
    tok = _argmax(logits)
  else:
    logits = logits / s.temperature
    if s.top_k > 0 and s.top_k < logits.shape[-1]:
      kth = jax.lax.top_k(logits, s.top_k)[0][:, -1:]
      logits = jnp.where(logits < kth, -jnp.inf, logits)
    if s.top_p < 1.0:
      # Keep the smallest prefix of the sorted distribution whose mass reaches top_p.
      desc = -jnp.sort(-logits, axis=-1)
      probs = jax.nn.softmax(desc, axis=-1)
      mass_before = jnp.cumsum(probs, axis=-1) - probs
      cutoff = jnp.min(jnp.where(mass_before < s.top_p, desc, jnp.inf), axis=-1, keepdims=True)
      logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    tok = _inverse_cdf(logits, key)
  tok = tok.astype(jnp.int32)
  if not s.return_logprobs:
    return tok, None
  return tok, scoring.label_logprobs(logits, tok)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample_jit(graphdef, s: SamplerSettings, state, prompt, pmask, rng) -> SampleOutput:
  model = nnx.merge(graphdef, state)
  b, p = prompt.shape
  n = s.max_new_tokens
  first_pos = jnp.sum(pmask, axis=1, dtype=jnp.int32)  # RoPE position of the first new token

  # Prefill: only the last prompt position's logits are needed (the head is [D,V]).
  if s.use_cache:
    cache = model.init_cache(b, p + n, like=prompt)
    h, aux = model.forward_cached(prompt, cache, positions=default_positions(pmask),
                                  attention_mask=pmask)
  else:
    h, _ = model.hidden_states(prompt, attention_mask=pmask)
    aux = (jnp.concatenate([prompt, batch_full(prompt, (b, n), s.pad_id, jnp.int32)], axis=1),
           jnp.concatenate([pmask, batch_full(prompt, (b, n), False, bool)], axis=1))
  rng, key = jax.random.split(rng)
  tok, lp = choose(model.next_token_logits(h[:, -1]), key, s)
  tokens = jax.lax.dynamic_update_slice(batch_full(prompt, (b, n), s.pad_id, jnp.int32),
                                        tok[:, None], (0, 0))
  logprobs = None
  if s.return_logprobs:
    logprobs = jax.lax.dynamic_update_slice(batch_full(prompt, (b, n), 0, jnp.float32),
                                            lp[:, None], (0, 0))
  mask = batch_full(prompt, (b, n), False, bool).at[:, 0].set(True)
  done = tok == s.eos_id

  def cond(carry):
    step, done = carry[0], carry[4]
    return (step < n) & ~jnp.all(done)

  def body(carry):
    step, tokens, mask, logprobs, done, aux, rng = carry
    prev = jax.lax.dynamic_index_in_dim(tokens, step - 1, axis=1)  # [B,1]
    if s.use_cache:
      h, aux = model.forward_cached(prev, aux, positions=(first_pos + step - 1)[:, None])
      h = h[:, 0]
    else:
      buf, bmask = aux
      slot = p + step - 1
      buf = jax.lax.dynamic_update_slice(buf, prev, (0, slot))
      bmask = jax.lax.dynamic_update_slice(bmask, batch_full(prompt, (b, 1), True, bool), (0, slot))
      h_all, _ = model.hidden_states(buf, attention_mask=bmask)
      h = jax.lax.dynamic_index_in_dim(h_all, slot, axis=1, keepdims=False)
      aux = (buf, bmask)
    rng, key = jax.random.split(rng)
    tok, lp = choose(model.next_token_logits(h), key, s)
    live = ~done
    tok = jnp.where(live, tok, s.pad_id)
    tokens = jax.lax.dynamic_update_slice(tokens, tok[:, None], (0, step))
    if s.return_logprobs:
      logprobs = jax.lax.dynamic_update_slice(logprobs, jnp.where(live, lp, 0.0)[:, None], (0, step))
    mask = jax.lax.dynamic_update_slice(mask, live[:, None], (0, step))
    done = done | (live & (tok == s.eos_id))
    return step + 1, tokens, mask, logprobs, done, aux, rng

  carry = (jnp.ones((), jnp.int32), tokens, mask, logprobs, done, aux, rng)
  _, tokens, mask, logprobs, _, _, _ = jax.lax.while_loop(cond, body, carry)
  return SampleOutput(tokens, mask, logprobs)


BUCKETS = (16, 32, 64, 128, 256, 512)
# Batch entries laid out along the response axis (axis 1): what trimming cuts.
RESPONSE_ALIGNED = ("response_tokens", "response_mask", "teacher_topk_logprobs",
                    "teacher_topk_indices")


def bucket_width(mask, buckets=BUCKETS) -> int:
  """The longest real response in `mask` [B, R] rounded up to a bucket (R when none fits)."""
  mask = np.asarray(mask)
  width = mask.shape[1]
  real = mask.any(axis=0)
  longest = int(np.nonzero(real)[0][-1]) + 1 if real.any() else 0
  return min([b for b in sorted(buckets) if longest <= b <= width], default=width)


def trim_to_bucket(batch: dict, buckets=BUCKETS) -> dict:
  """Cuts right-padded responses to the longest real response, rounded up to a bucket width.

  Columns after every row's last masked-in token are padding: the teacher pass and the train
  step would spend their time on them (a sampler stops early once every row has emitted EOS,
  but its output keeps `max_new_tokens` columns, and dataset responses are padded to
  data.max_response_len). The loss is unchanged: causal attention means no kept position sees
  a cut one, and cut positions are outside the loss mask. Rounding up to one of a few
  `buckets` keeps the number of compiled shapes small; a batch wider than every bucket that
  fits is left as it is. Host-side (it reads the mask to pick a static width): call it between
  the sampler and the jitted step. Entries not in RESPONSE_ALIGNED pass through unchanged.
  """
  mask = batch["response_mask"]
  new = bucket_width(mask if isinstance(mask, np.ndarray) else sharding.fetch(mask), buckets)
  if new == mask.shape[1]:
    return batch
  return {**batch, **_cut_columns({k: batch[k] for k in RESPONSE_ALIGNED if k in batch}, new)}


@functools.partial(jax.jit, static_argnums=1)
def _cut_columns(tree, width: int):
  # Jitted: the batch's global arrays may span hosts, and the cut keeps their batch sharding.
  return jax.tree.map(lambda x: x[:, :width], tree)
