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
from gkd.teachers.build import MODEL_FREE_TEACHERS, dtypes, llama_config, model_files
from gkd.teachers.scorer import SCORES
from gkd.teachers.self_distill import teacher_prompt_len
from gkd.train import step as step_lib
from gkd.train.optimizer import make_optimizer

GiB = 2**30


def model_config(config, role: str, *, vocab_size=None, teacher=None) -> llama.LlamaConfig:
  """The LlamaConfig a run would build for `role`, without reading any weights."""
  cfg = config[role]
  kinds = dtypes(cfg, role)
  with model_files(f"{role}.path", cfg.path):
    if cfg.source == "gguf":
      return gguf.config_from_gguf(gguf.gguf.GGUFReader(cfg.path or gguf.smollm2_gguf_path()),
                                   **kinds)
    if cfg.source == "pretrained":
      with open(os.path.join(cfg.path, "config.json")) as f:
        return safetensors.config_from_hf(json.load(f), **kinds)
  if cfg.source == "derive":
    layers = list(cfg.derive_layers) or list(range(0, teacher.n_layers, cfg.derive_every_k))
    return teacher.select_layers(layers).replace(**kinds)
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
  "student_sampler", "teacher_sampler", "peak"}. A scoring-server teacher has no weights here
  (its log-probs come in the batch); a self-distilling one reads the student's weights, a copy
  of them ("initial") or an EMA in the train state."""
  vocab = testbed_tokenizer().vocab_size if config.tokenizer == "testbed" else None
  kind = teachers.kind_of(config)
  has_model = config.mode == "gkd" and kind not in MODEL_FREE_TEACHERS
  t_cfg = model_config(config, "teacher", vocab_size=vocab) if has_model else None
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
  b, p, r = config.train.batch_size, config.data.max_prompt_len, config.data.max_response_len
  rows = sharding.batch_sharding(mesh)
  arrays = {"prompt_tokens": ((b, p), jnp.int32), "prompt_mask": ((b, p), bool),
            "response_tokens": ((b, r), jnp.int32), "response_mask": ((b, r), bool)}
  moving = None
  teacher = teachers.Live(t_graph) if t_graph is not None else teachers.Labels()
  if config.mode == "gkd" and kind == "scorer":
    teacher = teachers.KINDS[kind]()
    arrays[SCORES] = ((b, r), jnp.float32)
  elif config.mode == "gkd" and kind == "self":
    weights = config.teacher.self_weights
    teacher = teachers.KINDS[kind](weights, None if weights == "current" else s_graph)
    length = teacher_prompt_len(config)
    arrays.update(teacher_prompt_tokens=((b, length), jnp.int32),
                  teacher_prompt_mask=((b, length), bool))
    copy = params["student"] if base is None else base  # the merged student's shapes
    if weights == "ema":
      moving = copy
    elif weights == "initial":
      t_params = put(copy, sharding.param_shardings(mesh, copy))
  if config.objective.get("estimator", "full") == "sampled_token":
    arrays["sampler_logprobs"] = ((b, r), jnp.float32)
  batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=rows)
           for k, (shape, dtype) in arrays.items()}
  state = step_lib.TrainState(jax.ShapeDtypeStruct((), jnp.int32), params,
                              jax.eval_shape(optimizer.init, params), moving)
  state = put(state, sharding.param_shardings(mesh, state))
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
  from absl import flags
  from ml_collections import config_flags

  from gkd import cli
  config_flags.DEFINE_config_file("config", None, "Experiment config file.")
  flags.mark_flags_as_required(["config"])
  cli.run(main)
