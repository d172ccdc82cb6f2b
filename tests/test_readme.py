"""The README's two opening commands work as written: CI runs the test one, a test runs the demo."""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands() -> list[str]:
  """The first code block's command lines, comments stripped."""
  with open(os.path.join(ROOT, "README.md")) as f:
    block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
  return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_test_command():
  demo, tests = readme_commands()
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    assert tests in [line.strip() for line in f], f"{tests!r} is not a line of .ci/run"
  for command in (demo, tests):
    for part in command.split("&&"):
      program, *args = shlex.split(part)
      script = args[0] if program == "bash" else program
      assert os.path.exists(os.path.join(ROOT, script)), f"{script} (from the README) does not exist"


def _run_demo(tmp_path, *extra):
  demo = readme_commands()[0].split("&&")[-1]  # the set-up has run: this suite runs in its .venv
  argv = [arg if not arg.startswith("--workdir=") else f"--workdir={tmp_path / 'demo'}"
          for arg in shlex.split(demo)]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as for a user
  out = subprocess.run(argv + list(extra), cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1200)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.e2e
def test_demo_command_runs_short(tmp_path):
  """The demo as written, two steps long, ends with its summary of what distillation did."""
  stdout = _run_demo(tmp_path, "--config.train.num_steps=2")
  assert "held-out KL(teacher‖student)" in stdout
  assert os.path.exists(tmp_path / "demo" / "export" / "model.safetensors")


@pytest.mark.slow
def test_demo_command_runs_as_written(tmp_path):
  stdout = _run_demo(tmp_path)
  assert "held-out KL(teacher‖student)" in stdout


@pytest.mark.e2e
def test_own_data_example_runs_as_documented(tmp_path):
  """The README's 'Your own data' example, in its tiny-model form, trains end to end."""
  with open(os.path.join(ROOT, "README.md")) as f:
    section = f.read().split("## Your own data", 1)[1].split("\n## ", 1)[0]
  line = next(ln for ln in section.splitlines() if "configs/files.py:runlocal=true" in ln)
  argv = [a if not a.startswith("--workdir=") else f"--workdir={tmp_path / 'files'}"
          for a in shlex.split(line.split("  #")[0])]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["GKD_DATA_DIR"] = str(tmp_path / "tfds")
  argv[0] = sys.executable  # "python" in the README: the set-up's .venv, which runs this suite
  out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.exists(tmp_path / "files" / "final_metrics.json")
  assert "accuracy (greedy)" in out.stdout
