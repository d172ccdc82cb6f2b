"""The training loop end to end on the testbed's smoke size: sharding, resume after SIGKILL, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.helpers import apply_overrides, smoke_gkd_config
from gkd.train import loop
from gkd.rundir import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(**overrides):
  c = smoke_gkd_config()
  c.mix.update(dataset=0.4, teacher=0.3, student=0.3)  # every source within a few steps
  c.train.update(num_steps=5, checkpoint_every=1)
  return apply_overrides(c, overrides)


pytestmark = pytest.mark.usefixtures("shared_data_dir")


def _losses(workdir):
  return [r["loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r]


@pytest.mark.e2e
def test_one_eight_devices_and_fsdp_give_the_same_loss_curve(tmp_path):
  assert jax.device_count() == 8  # conftest forces 8 host devices
  curves = {}
  for name, mesh in {"1": {"num_devices": 1}, "8": {}, "fsdp": {"fsdp": 4}}.items():
    c = smoke_config(**{f"mesh.{k}": v for k, v in mesh.items()})
    loop.train(c, str(tmp_path / name))
    curves[name] = _losses(str(tmp_path / name))
    sources = [r["source"] for r in read_jsonl(str(tmp_path / name / "metrics.jsonl")) if "source" in r]
  assert len(curves["1"]) == 5 and set(sources) == {"dataset", "teacher", "student"}
  np.testing.assert_allclose(curves["8"], curves["1"], rtol=2e-3)
  np.testing.assert_allclose(curves["fsdp"], curves["1"], rtol=2e-3)


def _cli(workdir, *extra):
  return [sys.executable, "-m", "gkd.main", "--config=configs/testbed.py:stage=gkd,runlocal=true",
          f"--workdir={workdir}", "--config.train.progress_bar=false", "--config.mix.dataset=0.4",
          "--config.mix.teacher=0.3", "--config.mix.student=0.3", "--config.train.num_steps=6",
          "--config.train.checkpoint_every=1", *extra]


def _final_params(workdir):
  from gkd.train.checkpoint import Checkpointer
  ckpt = Checkpointer(workdir, every=1, keep=2)
  import orbax.checkpoint as ocp
  restored = ckpt._manager.restore(ckpt.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.tree.leaves(restored["state"])


@pytest.mark.e2e
def test_sigkill_and_resume_ends_with_the_same_parameters(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  straight = tmp_path / "straight"
  subprocess.run(_cli(straight), cwd=ROOT, env=env, check=True, capture_output=True)

  killed = tmp_path / "killed"
  proc = subprocess.Popen(_cli(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and not (killed / "checkpoints" / "3").exists():
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-save
  proc.wait()
  assert not (killed / "final_metrics.json").exists(), "the run finished before it was killed"
  subprocess.run(_cli(killed), cwd=ROOT, env=env, check=True, capture_output=True)

  for a, b in zip(_final_params(straight), _final_params(killed), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _losses(killed) == _losses(straight)  # metrics.jsonl has no duplicated or lost steps
  with open(straight / "final_metrics.json") as f, open(killed / "final_metrics.json") as g:
    assert json.load(f) == json.load(g)


@pytest.mark.e2e
def test_cli_rejects_a_bad_config_before_running(tmp_path):
  out = subprocess.run(_cli(tmp_path / "bad", "--config.objective.divergence_kw={'beta': 1.5}"),
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0
  assert "beta must lie in [0, 1], got 1.5" in out.stderr
  assert "Traceback" not in out.stderr and out.stderr.strip().startswith("error: objective")
  assert not (tmp_path / "bad" / "checkpoints").exists()
  out = subprocess.run(_cli(tmp_path / "bad", "--config.train.log_every=0", "--traceback"),
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and "Traceback" in out.stderr and "train.log_every=0" in out.stderr


@pytest.mark.e2e
def test_trimmed_responses_train_as_the_full_width(tmp_path):
  # train.trim_responses cuts all-padding columns (sampling.trim_to_bucket): the same run.
  from flax import nnx

  from gkd import models
  from tests import helpers
  probe = loop.Run(helpers.smoke_gkd_config(), str(tmp_path / "probe"))
  widths = {probe.make_batch(step, "dataset")["response_tokens"].shape[1] for step in range(4)}
  assert min(widths) < probe.config.data.max_response_len  # most arithmetic answers are short
  finals = {}
  for trim in (True, False):
    c = helpers.smoke_gkd_config()
    c.mix.update(dataset=0.5, student=0.5)
    c.train.update(num_steps=4, checkpoint_every=0, trim_responses=trim)
    loop.train(c, str(tmp_path / str(trim)))
    model, _ = models.load_pretrained(str(tmp_path / str(trim) / "export"))
    finals[trim] = jax.tree.leaves(nnx.state(model).to_pure_dict())
  for a, b in zip(finals[True], finals[False], strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
