"""experiments/benchmarks/accelerator_check.py: its plumbing on CPU with tiny models, and its
FLOP count against XLA's."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from gkd.models import llama

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['teacher.source="init"', 'teacher.preset="tiny"', 'teacher.dtype="float32"',
        'student.dtype="float32"', 'tokenizer="testbed"', 'data.chat_template=False',
        'data.task="arithmetic"', "train.batch_size=4", "sampling.num_samples=2",
        "optim.grad_accum_steps=2", "mesh.num_devices=1"]


def _module():
  spec = importlib.util.spec_from_file_location(
      "accelerator_check", os.path.join(ROOT, "experiments", "benchmarks", "accelerator_check.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.e2e  # runs a config's steps through the script
def test_runs_the_gpu_config_with_tiny_models_and_reports_every_figure(shared_data_dir, tmp_path,
                                                                         capsys):
  out = tmp_path / "rows.jsonl"
  record = _module().main(["--config", "configs/smollm2_gpu.py:runlocal=true", "--steps", "2",
                           "--matmul_n", "128", "--out", str(out), *(f"--set={s}" for s in TINY)])
  assert out.read_text().count("\n") == 1
  assert len(record["steps"]) == 2 and all(s["rows"] == 4 for s in record["steps"])
  assert all(s["source"] == "student" for s in record["steps"])  # the config is on-policy
  assert record["seconds_per_step"] > 0 and record["train_tokens_per_s"] > 0
  assert record["generated_tokens_per_s"] > 0 and record["peak_memory_bytes"] > 0
  assert 0 < record["mfu_vs_measured_matmul"] < 1 and record["mfu_vs_spec"] is None  # CPU: no spec
  assert "MFU" in capsys.readouterr().err


def test_an_unknown_field_fails_with_one_line():
  with pytest.raises(SystemExit, match="no field 'train.batch'"):
    _module().load_config("configs/smollm2_gpu.py", ["train.batch=4"])


def test_token_flops_match_xla_for_a_forward():
  cfg = llama.PRESETS["tiny"].replace(vocab_size=512, dim=128, ffn_dim=384, n_layers=3)
  model = llama.Llama(cfg, rngs=nnx.Rngs(0))
  graph, state = nnx.split(model)
  tokens = jnp.zeros((2, 64), jnp.int32)
  cost = jax.jit(lambda s, t: nnx.merge(graph, s)(t)).lower(state, tokens).compile().cost_analysis()
  xla = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
  ours = 2 * 64 * _module().token_flops(cfg, context=64)  # the masked [T, T] scores are computed
  # XLA also counts the elementwise work (norms, softmax, RoPE); the products dominate.
  assert 0.85 * xla < ours < 1.02 * xla, (ours, xla)
