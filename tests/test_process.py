"""A run as a process: SIGTERM saves and exits 143, the workdir lock, a non-finite loss fails
the point (exit 1, last good checkpoint kept), and a SIGKILLed sweep takes its point with it."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gkd import rundir, sweep
from gkd.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/testbed.py:stage=gkd,runlocal=true"


pytestmark = pytest.mark.e2e  # every test here trains or drives the command line


@pytest.fixture
def env(tmp_path_factory, monkeypatch):
  data = str(tmp_path_factory.getbasetemp() / "tfds")
  monkeypatch.setenv("GKD_DATA_DIR", data)
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
              GKD_DATA_DIR=data, PYTHONPATH=ROOT)


def _wait_for(predicate, what, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.1)


def test_sigterm_saves_the_current_step_and_exits_143_and_warns_once_about_cut_prompts(tmp_path, env):
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "gkd.main", f"--config={CONFIG}", f"--workdir={workdir}",
         "--config.train.progress_bar=false", "--config.train.num_steps=500",
         "--config.train.checkpoint_every=0",  # only the final step, or SIGTERM's
         "--config.data.max_prompt_len=3"]  # cuts most prompts: one warning
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  _wait_for(lambda: len(rundir.read_jsonl(str(workdir / rundir.METRICS))) >= 2, "training steps")
  with pytest.raises(rundir.WorkdirBusy, match=f"{workdir} is in use by another process .pid {proc.pid}"):
    with rundir.lock(str(workdir)):
      pass
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-2000:]
  assert "Traceback" not in err
  assert err.count("longer than data.max_prompt_len=3 or") == 1
  report = checkpoint.verify(str(workdir))
  assert len(report["intact"]) == 1 and not report["bad"] and not report["finished"]
  assert f"SIGTERM: saved step {report['intact'][0]} in {workdir}" in err


def test_non_finite_loss_fails_the_point_and_keeps_the_last_good_checkpoint(tmp_path, env):
  workdir, log = tmp_path / "nan", tmp_path / "nan.log"
  row = sweep.run_point(CONFIG, {"optim.learning_rate": 1e6, "optim.warmup_steps": 0,
                                 "train.num_steps": 6, "train.checkpoint_every": 1,
                                 "train.keep_checkpoints": 10}, str(workdir), str(log))
  assert row["status"] == "failed", log.read_text()[-2000:]
  assert row["error"].startswith("error: non-finite") and "Last good checkpoint" in row["error"]
  assert "Traceback" not in log.read_text()
  bad_step = int(row["error"].split(" at step ")[1].split(";")[0])
  report = checkpoint.verify(str(workdir))
  assert report["intact"] and max(report["intact"]) < bad_step and not report["finished"]
  assert f"step {max(report['intact'])}" in row["error"]
  ckpt = checkpoint.Checkpointer(str(workdir), every=1, keep=None)
  state = ckpt._manager.restore(max(report["intact"]),
                                args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  ckpt.close()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


SWEEP_CONFIG = '''
from configs.testbed import get_config  # noqa: F401

def get_sweep(arg=None):
  return [{"train.num_steps": 100000, "seed": 0}]
'''


def test_a_sigkilled_sweep_takes_its_point_process_with_it(tmp_path, env):
  config = tmp_path / "sweep_config.py"
  config.write_text(SWEEP_CONFIG)
  cmd = [sys.executable, "-m", "gkd.sweep", f"--config={config}:stage=gkd,runlocal=true",
         f"--workdir={tmp_path / 'out'}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  lock = tmp_path / "out" / "points" / "num_steps=100000,seed=0" / rundir.LOCK
  _wait_for(lambda: lock.exists() and lock.read_text().strip(), "the point to start")
  point = int(lock.read_text())
  proc.kill()  # the sweep alone, not its process group
  proc.wait()

  def gone():
    try:
      os.kill(point, 0)
    except ProcessLookupError:
      return True
    with open(f"/proc/{point}/stat") as f:  # a zombie awaiting its reaper counts as gone
      return f.read().split(")")[-1].split()[0] == "Z"
  _wait_for(gone, "the point process to die", timeout=30)
