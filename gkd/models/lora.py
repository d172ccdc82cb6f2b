"""LoRA students: only low-rank adapters are trained, optimized and checkpointed.

With `lora.rank = r > 0` each targeted student kernel W [in, out] (by module name: `lora.targets`,
e.g. "q,k,v,o,gate,up,down") gets an adapter made by Flax NNX's `nnx.LoRA(in, r, out)`: lora_a
[in, r] (variance-scaling init) and lora_b [r, out] (zeros, so training starts at the base
model). The model used everywhere is W + (alpha / r)·lora_a @ lora_b (what `nnx.LoRA` adds to a
base layer's output, x @ lora_a @ lora_b, folded into the weight): `merged` builds it, so the
train step, the samplers, eval and export all run the one plain model code, and export writes the
merged weights (a plain student, loadable without this module).

The base weights stay frozen outside the train state, stored in the compute dtype (`frozen`):
the optimizer and its state (Adam's two moments) and checkpoints hold the adapters only, which
is what lets a 1B-class student train on one accelerator. A resumed run rebuilds the base from its config (the same source and seed), so
the config must still point at the same base.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def targets_of(config) -> tuple[str, ...]:
  return tuple(t.strip() for t in config.lora.targets.split(",") if t.strip())


def init(base: dict, *, rank: int, targets: tuple[str, ...], seed: int) -> dict:
  """Adapters for `base` (a student's pure state dict): a tree holding only the targeted kernels'
  {"lora_a", "lora_b"}, at their places in the base's nesting."""
  rngs = nnx.Rngs(seed)

  def visit(node: dict) -> dict:
    out = {}
    for k, v in node.items():
      if not isinstance(v, dict):
        continue
      kernel = v.get("kernel")
      if k in targets and kernel is not None and not isinstance(kernel, dict) and kernel.ndim == 2:
        out[k] = nnx.state(nnx.LoRA(kernel.shape[0], rank, kernel.shape[1], rngs=rngs)).to_pure_dict()
      elif sub := visit(v):
        out[k] = sub
    return out

  adapters = visit(base)
  if not adapters:
    raise ValueError(f"lora.targets={','.join(targets)!r} matches no 2-D kernel of the student.")
  return adapters


def merged(base: dict, adapters: dict, scale: float) -> dict:
  """`base` with W + scale·lora_a @ lora_b at every adapted kernel (in W's dtype)."""
  out = dict(base)
  for k, sub in adapters.items():
    if "lora_a" in sub:
      w = base[k]["kernel"]
      delta = jnp.asarray(sub["lora_a"], jnp.float32) @ jnp.asarray(sub["lora_b"], jnp.float32)
      out[k] = dict(base[k], kernel=(w.astype(jnp.float32) + scale * delta).astype(w.dtype))
    else:
      out[k] = merged(base[k], sub, scale)
  return out


def frozen(base: dict, config) -> dict:
  """The base as the run keeps it: in the student's compute dtype (it is only read, like a
  teacher), unless student.param_dtype names a storage dtype."""
  if config.student.param_dtype:
    return base
  dtype = jnp.dtype(config.student.dtype)
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, base)


def student_params(params: dict, base: dict | None, scale: float | None) -> dict:
  """The student's full state dict from a train state's params: params["student"], or with
  LoRA (params["lora"]) the frozen `base` merged with the adapters."""
  return params["student"] if base is None else merged(base, params["lora"], scale)


def count(adapters: dict) -> int:
  return sum(x.size for x in jax.tree.leaves(adapters))
