"""Building models: random initialization, students cut from a teacher, and flat parameter views.

`flat_params` / `from_flat_params` are the bridge the checkpoint loaders and writers (GGUF,
safetensors) and dtype changes go through: a dict from stable dotted names, such as
"layers.0.attn.q.kernel", to arrays.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gkd.models.config import DTYPES, LlamaConfig
from gkd.models.transformer import Llama


def init_model(config: LlamaConfig, seed: int) -> Llama:
  """A randomly initialized model (normal(init_std) weights, norms at their identity)."""
  return Llama(config, rngs=nnx.Rngs(seed))


def count_params(model: nnx.Module) -> int:
  """Number of parameter scalars (tied embeddings counted once)."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _copy_state(dst: nnx.Module, src: nnx.Module) -> None:
  # Real copies: a trainer that donates the student's buffers must not delete the teacher's.
  nnx.update(dst, jax.tree.map(lambda a: jnp.array(a, copy=True), nnx.state(src, nnx.Param)))


def derive_student(teacher: Llama, *, layers: Sequence[int] | None = None,
                   every_k: int | None = None, rngs: nnx.Rngs) -> Llama:
  """A shallower student initialized from the teacher (DistilBERT's recipe).

  Copies the embeddings, the final norm, the output head and the chosen blocks; each block keeps
  its own settings (window, RoPE). Give exactly one of `layers` (teacher block indices, in
  order) or `every_k` (blocks 0, k, 2k, ...). For a narrower student, build
  `init_model(teacher.config.replace(dim=..., ...), seed)` instead: widths cannot be copied, so
  it is randomly initialized.
  """
  n = teacher.config.n_layers
  if (layers is None) == (every_k is None):
    raise ValueError("derive_student: give exactly one of `layers` or `every_k`.")
  if every_k is not None:
    if every_k < 1:
      raise ValueError(f"derive_student: every_k must be >= 1, got {every_k}.")
    layers = list(range(0, n, every_k))
  layers = [int(i) for i in layers]
  if not layers or any(not 0 <= i < n for i in layers):
    raise ValueError(f"derive_student: layers {layers} must be a non-empty subset of [0, {n}).")
  student = Llama(teacher.config.select_layers(layers), rngs=rngs)
  _copy_state(student.embed, teacher.embed)
  _copy_state(student.final_norm, teacher.final_norm)
  if not teacher.config.tie_embeddings:
    _copy_state(student.lm_head, teacher.lm_head)
  for dst, src in zip(student.layers, layers):
    _copy_state(dst, teacher.layers[src])
  return student


def flat_params(model: Llama) -> dict[str, jax.Array]:
  """{"layers.0.attn.q.kernel": array, ...} for every parameter."""
  return {".".join(map(str, path)): var[...]
          for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def from_flat_params(config: LlamaConfig, params: dict[str, Any]) -> Llama:
  """Builds a model from a complete {name: array} dict without random-initializing it first;
  raises ValueError naming any missing, unexpected or mis-shaped parameter."""
  abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  flat = dict(nnx.to_flat_state(state))
  want = {".".join(map(str, k)): k for k in flat}
  missing, extra = sorted(set(want) - set(params)), sorted(set(params) - set(want))
  if missing or extra:
    raise ValueError(f"Checkpoint does not match the architecture: missing {missing[:5]}"
                     f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}.")
  pdt = DTYPES[config.param_dtype]
  for name, key in want.items():
    value = params[name]
    if tuple(value.shape) != tuple(flat[key].shape):
      raise ValueError(f"Parameter {name} has shape {tuple(value.shape)}, the config implies "
                       f"{tuple(flat[key].shape)}.")
    flat[key] = flat[key].replace(jnp.asarray(value, pdt))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
