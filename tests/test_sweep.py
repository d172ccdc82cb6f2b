"""Sweeps end to end: kill-and-restart loses and repeats nothing, a bad point is reported, the
analysis notebook runs headless on the result and saves its figures."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gkd import sweep
from tests.helpers import apply_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP_CONFIG = '''
from configs.testbed import get_config  # noqa: F401  (the testbed config, smoke size via the arg)

def get_sweep(arg=None):
  return [{"objective.divergence": "forward_kl", "seed": 0},
          {"objective.divergence_kw": {"beta": 1.5}, "seed": 0},  # invalid: must fail alone
          {"objective.divergence": "generalized_jsd", "mix.student": 1.0, "mix.dataset": 0.0, "seed": 1}]
'''


def test_point_names():
  assert sweep.point_name({"objective.divergence_kw": {"beta": 0.5}, "seed": 1}) == "beta=0.5,seed=1"
  assert sweep.point_name({"objective.divergence": "forward_kl", "objective.divergence_kw": {},
                           "seed": 0}) == "divergence=forward_kl,seed=0"


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sweep")
  config = tmp / "sweep_config.py"
  config.write_text(SWEEP_CONFIG)
  workdir = tmp / "out"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             GKD_DATA_DIR=str(tmp / "tfds"))
  cmd = [sys.executable, "-m", "gkd.sweep", f"--config={config}:stage=gkd,runlocal=true",
         f"--workdir={workdir}"]
  first = workdir / "points" / "divergence=forward_kl,seed=0" / "final_metrics.json"
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and not first.exists():
    time.sleep(0.1)
  assert first.exists(), "the first point never finished"
  first_mtime = first.stat().st_mtime_ns
  os.killpg(proc.pid, signal.SIGKILL)  # the sweep and the point it is running
  proc.wait()
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir, first_mtime, first


@pytest.mark.e2e
def test_interrupted_sweep_completes_without_losing_or_repeating_points(finished_sweep):
  workdir, first_mtime, first = finished_sweep
  rows = [json.loads(line) for line in open(workdir / "results.jsonl")]
  assert [r["point"] for r in rows] == ["divergence=forward_kl,seed=0", "beta=1.5,seed=0",
                                        "divergence=generalized_jsd,student=1.0,dataset=0.0,seed=1"]
  assert [r["status"] for r in rows] == ["done", "failed", "done"]
  assert first.stat().st_mtime_ns == first_mtime  # finished before the kill: not run again
  for r in rows[::2]:
    assert {"accuracy", "forward_kl", "reverse_kl"} <= set(r["metrics"])
  assert "beta must lie in [0, 1], got 1.5" in rows[1]["error"]
  md = (workdir / "summary.md").read_text()
  assert "## Mean and 95% CI per method" in md and "## Paired differences vs FKL" in md
  assert (workdir / "summary.csv").read_text().count("\n") == 1 + 3
  assert (workdir / "differences.csv").read_text().count("\n") == 1 + 2


@pytest.mark.e2e
def test_analysis_notebook_runs_headless_and_saves_figures(finished_sweep):
  nbformat = pytest.importorskip("nbformat")
  from nbclient import NotebookClient
  workdir, *_ = finished_sweep
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "analysis.ipynb"), as_version=4)
  # As Jupyter runs it: the kernel starts in notebooks/, and the paths are the repo root's.
  os.environ["GKD_SWEEP_DIR"] = os.path.relpath(workdir, ROOT)
  try:
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}}).execute()
  finally:
    del os.environ["GKD_SWEEP_DIR"]
  for name in ("final_accuracy.png", "heatmap_accuracy.png", "heatmap_forward_kl.png", "curves_loss.png",
               "paired_accuracy.png"):
    assert (workdir / name).stat().st_size > 5000, name
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert "2 of 3 points finished" in text and "beta=1.5,seed=0" in text


def test_labels():
  from gkd.eval import plots
  assert plots.method_label({"mode": "sft"}) == "SFT"
  assert plots.method_label({"mix.teacher": 1.0, "objective.divergence": "forward_kl"}) == "SeqKD"
  assert plots.method_label({"objective.beta": 0.9}) == "JSD(0.9)"
  assert plots.method_label({"objective.divergence_kw": {"beta": 0.1}}) == "JSD(0.1)"
  assert plots.method_label({"objective.divergence_kw.beta": 0.7}) == "JSD(0.7)"
  assert plots.method_label({"objective.divergence": "forward_kl", "sampling.speculative_topk": 1,
                             "objective.rl_weight": 0.1, "lora.rank": 8}) == \
      "FKL + SKD(K=1) + RL(0.1) + LoRA(r=8)"
  assert plots.method_label({"objective.layer_map": "0:1", "teacher_store": "s",
                             "sampling.speculative_topk": 0}) == "JSD(0.5) + layers + store"


@pytest.mark.parametrize("arg, count, methods", [("sweep=paper", 85, 17), ("sweep=temperature", 20, 4),
                                                 ("sweep=prompts", 20, 4), ("sweep=beyond", 30, 6), ("sweep=store", 6, 2),
                                                 ("runlocal=true", 2, 2)])
def test_testbed_sweeps_are_seed_major_valid_configs(arg, count, methods):
  from configs import testbed
  from gkd.train import validate
  points = testbed.get_sweep(arg)
  assert len(points) == count and len({sweep.point_name(p) for p in points}) == count
  seeds = [p["seed"] for p in points]
  assert seeds == sorted(seeds)  # seed-major: an interrupted sweep holds whole comparisons
  assert len({tuple(sorted((k, str(v)) for k, v in p.items() if k != "seed")) for p in points}) == methods
  for p in points[:methods]:
    validate.validate(apply_overrides(testbed.get_config("stage=gkd"), dict(p)))
  if arg == "sweep=paper":  # the paired baseline comes first
    assert points[0]["mode"] == "sft" and points[1]["mix.student"] == 0.0


def test_run_curves_draws_a_binomial_band(tmp_path):
  from gkd.eval import plots
  run = tmp_path / "teacher"
  run.mkdir()
  (run / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in [
      {"step": 10, "loss": 1.0}, {"step": 250, "eval/accuracy": 0.2, "eval/num_examples": 500},
      {"step": 500, "eval/accuracy": 0.6, "eval/num_examples": 500}]))
  fig = plots.run_curves({"teacher": str(run)}, save_to=str(tmp_path), name="c.png")
  line = fig.axes[0].get_lines()[0]
  assert list(line.get_xdata()) == [250, 500] and list(line.get_ydata()) == [0.2, 0.6]
  band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
  half = 1.96 * (0.2 * 0.8 / 500) ** 0.5
  assert min(band) == pytest.approx(0.2 - half) and (tmp_path / "c.png").exists()


def test_figures_never_pool_one_method_at_different_settings(tmp_path):
  # The prompts sweep runs one method at 2,000 / 20,000 prompts: one bar of their mean would be
  # a setting nobody ran. Each setting is its own bar; a line against the setting joins them.
  from gkd.eval import plots
  rows = [{"point": f"n={n},seed={s}", "status": "done", "metrics": {"accuracy": acc + s / 100},
           "overrides": {"objective.divergence_kw": {"beta": 0.9}, "mix.student": 1.0,
                         "data.num_train_examples": n, "seed": s}}
          for n, acc in ((2000, 0.70), (20000, 0.80)) for s in (0, 1)]
  data = plots.intervals(rows, str(tmp_path), "accuracy")
  assert {k: round(ci.mean, 3) for k, ci in data.items()} == {
      ("JSD(0.9)\n2000 prompts", 1.0): 0.705, ("JSD(0.9)\n20000 prompts", 1.0): 0.805}
  fig = plots.metric_vs(rows, str(tmp_path), "data.num_train_examples")
  (line,) = fig.axes[0].containers  # one error-bar line
  assert list(line.lines[0].get_xdata()) == [2000, 20000] and line.get_label() == "JSD(0.9) λ=1"
