"""Helpers shared by several test files."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def apply_overrides(config, overrides: dict):
  """Sets dotted keys in place, e.g. {"objective.temperature": 2.0}, as --config.x=y would."""
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


@nnx.jit
def forward(model, tokens, **kwargs):
  """model(tokens, **kwargs) as one compiled program. Called outside jit a model runs op by op,
  compiling each op for each new shape; on the CPU that takes several times longer than
  compiling the whole forward pass once."""
  return model(tokens, **kwargs)


def count_traces(fn):
  """How many programs JAX traces while fn() runs (jax.monitoring's trace-duration events)."""
  events = []
  def listener(event, duration, **_):
    if event == "/jax/core/compile/jaxpr_trace_duration":
      events.append(duration)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  return len(events)


def smoke_gkd_config():
  """The testbed's seconds-long gkd config (configs/testbed.py, runlocal=true)."""
  sys.path.insert(0, ROOT)
  from configs import testbed
  return testbed.get_config("stage=gkd,runlocal=true")


def offline_kd_config(source: str, num_examples: int, **overrides):
  """The smoke config as a 3-step forward-KL run on one batch source ("dataset" or "teacher")
  over the first `num_examples` training prompts: what teacher stores and imports serve."""
  c = smoke_gkd_config()
  c.mix.update(dataset=0.0, teacher=0.0, student=0.0)
  c.mix[source] = 1.0
  c.data.num_train_examples = num_examples
  c.objective.divergence = "forward_kl"
  c.train.update(num_steps=3, checkpoint_every=0)
  c.eval.update(num_examples=8, every=0)
  return apply_overrides(c, overrides)


def left_pad(rows, width):
  """Token rows as left-padded (int32 tokens [B, width], bool mask [B, width]), as prompts are."""
  toks = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    toks[i, width - len(r):] = r
    mask[i, width - len(r):] = True
  return jnp.asarray(toks), jnp.asarray(mask)


def softmax64(z):
  """A float64 NumPy softmax over the last axis: the references' independent arithmetic."""
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)
