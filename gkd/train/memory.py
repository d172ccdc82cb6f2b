"""Device memory of a config's programs, measured by XLA from abstract shapes (no weights).

  python -m gkd.train.memory --config=configs/smollm2_gpu.py

compiles the train step and both samplers for ShapeDtypeStructs of the config's parameters,
optimizer state and batch, and reads `compiled.memory_analysis()`: XLA's buffer assignment,
per device, for the backend it runs on (on a CPU host that is the CPU backend's assignment;
an accelerator's fusion choices differ, typically by a little). Nothing is loaded: GGUF and
Hugging Face sources are read for their headers (config.json) only, so a 1B-class config
is checked in seconds of compile time on a laptop.

The run's peak is the larger of the train step's footprint and, while a sampler runs, the
resident state (student parameters and optimizer state, the teacher) plus the sampler's
own buffers (KV cache, logits).
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gkd import sampling, sharding, teachers
from gkd.data.tasks import testbed_tokenizer
from gkd.models import gguf, llama, lora, safetensors
from gkd.objectives import Objective
from gkd.teachers.build import dtypes, llama_config
from gkd.train import step as step_lib
from gkd.train.optimizer import make_optimizer

GiB = 2**30


def model_config(config, role: str, *, vocab_size=None, teacher=None) -> llama.LlamaConfig:
  """The LlamaConfig a run would build for `role`, without reading any weights."""
  cfg = config[role]
  kinds = dtypes(cfg, role)
  if cfg.source == "gguf":
    return gguf.config_from_gguf(gguf.gguf.GGUFReader(cfg.path or gguf.smollm2_gguf_path()), **kinds)
  if cfg.source == "pretrained":
    with open(os.path.join(cfg.path, "config.json")) as f:
      return safetensors.config_from_hf(json.load(f), **kinds)
  if cfg.source == "derive":
    n = len(list(cfg.derive_layers)) or len(range(0, teacher.n_layers, cfg.derive_every_k))
    return teacher.replace(n_layers=n, **kinds)
  return llama_config(cfg, vocab_size, role)


def abstract_params(lcfg: llama.LlamaConfig):
  """(graphdef, pure dict of ShapeDtypeStructs) of a model: nothing is allocated."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: llama.Llama(lcfg, rngs=nnx.Rngs(0))))
  return graphdef, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.to_pure_dict())


def _nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _footprint(compiled) -> int:
  m = compiled.memory_analysis()
  return m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes


def _own(compiled) -> int:
  """What a program allocates beyond its (already resident) arguments."""
  m = compiled.memory_analysis()
  return m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes


def analyze(config) -> dict:
  """Per-device bytes: {"state", "teacher", "frozen_student" (a LoRA student's base), "train_step",
  "student_sampler", "teacher_sampler", "peak"}."""
  vocab = testbed_tokenizer().vocab_size if config.tokenizer == "testbed" else None
  t_cfg = model_config(config, "teacher", vocab_size=vocab) if config.mode == "gkd" else None
  s_cfg = model_config(config, "student", vocab_size=vocab or (t_cfg and t_cfg.vocab_size), teacher=t_cfg)
  mesh = sharding.make_mesh(config)
  put = lambda tree, shardings: jax.tree.map(  # noqa: E731
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
  s_graph, params = abstract_params(s_cfg)
  base, lora_scale = params, None  # a LoRA student: frozen base, only adapters in the state
  if config.lora.rank:
    params = {"lora": jax.eval_shape(lambda: lora.init(base, rank=config.lora.rank,
                                                       targets=lora.targets_of(config), seed=0))}
    base = jax.eval_shape(lambda b: lora.frozen(b, config), base)
    base, lora_scale = put(base, sharding.param_shardings(mesh, base)), config.lora.alpha / config.lora.rank
  else:
    params, base = {"student": params}, None
  t_graph, t_params = abstract_params(t_cfg) if t_cfg else (None, None)
  if t_cfg is not None:
    t_params = put(t_params, sharding.param_shardings(mesh, t_params))
  optimizer = make_optimizer(config.optim, config.train.num_steps)
  state = step_lib.TrainState(jax.ShapeDtypeStruct((), jnp.int32), params,
                              jax.eval_shape(optimizer.init, params))
  state = put(state, sharding.param_shardings(mesh, state))
  b, p, r = config.train.batch_size, config.data.max_prompt_len, config.data.max_response_len
  rows = sharding.batch_sharding(mesh)
  batch = {"prompt_tokens": jax.ShapeDtypeStruct((b, p), jnp.int32, sharding=rows),
           "prompt_mask": jax.ShapeDtypeStruct((b, p), bool, sharding=rows),
           "response_tokens": jax.ShapeDtypeStruct((b, r), jnp.int32, sharding=rows),
           "response_mask": jax.ShapeDtypeStruct((b, r), bool, sharding=rows)}
  teacher = teachers.Live(t_graph) if t_graph is not None else teachers.Labels()
  step = functools.partial(step_lib.train_step, student_graph=s_graph, teacher=teacher,
                           objective=Objective.from_config(config.objective), optimizer=optimizer,
                           grad_accum_steps=config.optim.grad_accum_steps, lora_scale=lora_scale)
  with jax.set_mesh(mesh):
    train = jax.jit(step, donate_argnums=0).lower(state, batch, t_params, base).compile()
    out = {"state": _nbytes(state), "teacher": _nbytes(t_params) if t_params else 0,
           "frozen_student": _nbytes(base) if base else 0, "train_step": _footprint(train)}
    resident = out["state"] + out["teacher"] + out["frozen_student"]
    out["peak"] = out["train_step"]
    student = params["student"] if base is None else base  # a merged LoRA student: base's shapes
    for role, graph, role_params in (("student", s_graph, student), ("teacher", t_graph, t_params)):
      if graph is None:
        continue
      sampler = sampling.Sampler(graph, eos_id=0, pad_id=0)
      fn = jax.jit(lambda w, x, m, k, s=sampler: s(w, x, m, rng=k, max_new_tokens=r))
      compiled = fn.lower(role_params, batch["prompt_tokens"], batch["prompt_mask"],
                          jax.ShapeDtypeStruct((), jax.random.key(0).dtype)).compile()
      out[f"{role}_sampler"] = _own(compiled)
      out["peak"] = max(out["peak"], resident + out[f"{role}_sampler"])
  return out


def main(argv):
  del argv
  from absl import flags
  for name, value in analyze(flags.FLAGS.config).items():
    print(f"{name:16s} {value / GiB:8.2f} GiB")


if __name__ == "__main__":
  from absl import app
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Experiment config file.")
  app.run(main)
