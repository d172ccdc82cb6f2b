"""LoRA students (gkd.models.lora): the merge against NumPy, the adapters' gradients by the chain rule,
that only adapters are trained and checkpointed, exact resume, export of the merged weights."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gkd import models, teachers
from gkd.models import lora
from gkd.objectives import Objective
from gkd.train import loop, validate
from gkd.train import step as step_lib
from tests import helpers
from tests.test_resume import final_state
from tests.test_train_step import batch, tiny  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("shared_data_dir")


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_merge_is_w_plus_scaled_a_b_on_targets_only():
  base = nnx.state(tiny(0)).to_pure_dict()
  adapters = lora.init(base, rank=3, targets=("q", "down"), seed=0)
  assert set(_flat(adapters)) == {f"['layers'][{i}]['{m}']['{n}']['lora_{ab}']" for i in (0, 1)
                                  for m, n in (("attn", "q"), ("mlp", "down")) for ab in "ab"}
  # lora_b starts at zero: the merged model is the base model.
  for a, b in zip(jax.tree.leaves(lora.merged(base, adapters, 2.0)), jax.tree.leaves(base)):
    np.testing.assert_array_equal(a, b)
  rng = np.random.default_rng(0)
  adapters = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), adapters)
  merged, flat_base, flat_ad = _flat(lora.merged(base, adapters, 0.5)), _flat(base), _flat(adapters)
  for name, w in flat_base.items():
    owner = name.rsplit("['kernel']", 1)[0]
    if f"{owner}['lora_a']" in flat_ad:
      want = w.astype(np.float64) + 0.5 * flat_ad[f"{owner}['lora_a']"].astype(np.float64) @ \
          flat_ad[f"{owner}['lora_b']"]
      np.testing.assert_allclose(merged[name], want, rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_array_equal(merged[name], w)
  assert lora.count(adapters) == 2 * (32 * 3 + 3 * 32 + 64 * 3 + 3 * 32)
  with pytest.raises(ValueError, match="matches no 2-D kernel"):
    lora.init(base, rank=3, targets=("nope",), seed=0)


def test_adapter_gradients_follow_the_chain_rule(batch):  # noqa: F811
  # dL/dA = s·dL/dW·Bᵀ and dL/dB = s·Aᵀ·dL/dW, with dL/dW the full model's kernel gradient.
  student, teacher = tiny(0), tiny(1)
  sg, ss = nnx.split(student)
  tg, ts = nnx.split(teacher)
  base = ss.to_pure_dict()
  rng = np.random.default_rng(1)
  adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.1, jnp.float32),
                          lora.init(base, rank=2, targets=("v",), seed=0))
  scale = 4.0
  kw = dict(student_graph=sg, teacher=teachers.Live(tg), objective=Objective())
  loss = lambda p, b=None, **k: step_lib.loss_terms(p, ts.to_pure_dict(), batch, 3.0, b, **kw, **k)[0]
  merged = lora.merged(base, adapters, scale)
  g_full = jax.jit(jax.grad(loss))({"student": merged})["student"]
  g_lora = jax.jit(jax.grad(lambda p: loss(p, base, lora_scale=scale)))({"lora": adapters})["lora"]
  for i in (0, 1):
    a, b = adapters["layers"][i]["attn"]["v"]["lora_a"], adapters["layers"][i]["attn"]["v"]["lora_b"]
    dw = np.asarray(g_full["layers"][i]["attn"]["v"]["kernel"], np.float64)
    got = g_lora["layers"][i]["attn"]["v"]
    np.testing.assert_allclose(got["lora_a"], scale * dw @ np.asarray(b).T, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got["lora_b"], scale * np.asarray(a).T @ dw, rtol=1e-4, atol=1e-7)


def _config(**overrides):
  c = helpers.smoke_gkd_config()
  c.mix.update(dataset=0.5, student=0.5)
  c.lora.update(rank=2, targets="q,v,up")
  c.train.update(num_steps=4, checkpoint_every=1, keep_checkpoints=10, progress_bar=False)
  return helpers.apply_overrides(c, overrides)


@pytest.mark.e2e
def test_only_adapters_are_trained_checkpointed_and_merged_at_export(tmp_path):
  config = _config()
  run = loop.Run(config, str(tmp_path / "probe"))
  base = _flat(run.student_base)
  assert set(run.state.params) == {"lora"}
  adapter_size = lora.count(run.state.params["lora"])
  opt_size = sum(x.size for x in jax.tree.leaves(run.state.opt_state))
  assert opt_size <= 2 * adapter_size + 8  # Adam's two moments (and counters) of adapters only
  loop.train(config, str(tmp_path / "run"))
  saved = final_state(tmp_path / "run")
  assert sum(x.size for x in saved) == 1 + adapter_size + opt_size  # step, adapters, opt state
  exported, _ = models.load_pretrained(str(tmp_path / "run" / "export"))
  changed = {name for name, w in _flat(nnx.state(exported).to_pure_dict()).items()
             if not np.array_equal(w, base[name])}
  assert changed and all(any(f"['{m}']['kernel']" in n for m in ("q", "v", "up")) for n in changed)


@pytest.mark.e2e
def test_a_killed_lora_run_resumes_exactly(tmp_path):
  config = _config()
  loop.train(config, str(tmp_path / "straight"))
  shutil.copytree(tmp_path / "straight", tmp_path / "cut")
  for name in os.listdir(tmp_path / "cut" / "checkpoints"):
    if int(name) > 2:
      shutil.rmtree(tmp_path / "cut" / "checkpoints" / name)
  for name in ("final_metrics.json", "eval_examples.jsonl"):
    os.remove(tmp_path / "cut" / name)
  shutil.rmtree(tmp_path / "cut" / "export")
  loop.train(config, str(tmp_path / "cut"))
  for a, b in zip(final_state(tmp_path / "cut"), final_state(tmp_path / "straight"), strict=True):
    np.testing.assert_array_equal(a, b)


def test_bad_lora_configs_fail_clearly():
  for overrides in ({"lora.rank": -1}, {"lora.alpha": 0.0}, {"lora.targets": " "}):
    with pytest.raises(validate.ConfigError, match="lora:"):
      validate.validate(_config(**overrides))
  with pytest.raises(ValueError, match="matches no 2-D kernel"):
    loop.Run(_config(**{"lora.targets": "qq"}), "/nonexistent-unused")
