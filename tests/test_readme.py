"""The README's and the guides' commands work as written: CI runs the README's test command, the
demo runs (short here, in full with --runslow), the own-data example trains, and every command
and path the documents name exists (configs build, overrides name real fields)."""

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                                   for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
GUIDES = ("data", "teachers", "methods", "scaling", "experiments", "config")


def read(name: str) -> str:
  with open(os.path.join(ROOT, name)) as f:
    return f.read()


def readme_commands() -> list[str]:
  """The first code block's command lines, comments stripped."""
  block = re.search(r"```bash\n(.*?)```", read("README.md"), re.S).group(1)
  return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def command_lines(text: str) -> list[str]:
  """The `python -m gkd...` commands of a document's code blocks and indented blocks, with
  continuation lines joined and comments stripped."""
  blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
  blocks += ["\n".join(line[4:] for line in text.splitlines() if line.startswith("    "))]
  out = []
  for block in blocks:
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("  #")[0].strip()
      if re.search(r"(^|\s|/)python -m gkd\.", line):
        out.append(line[line.index("python -m gkd."):])
  return out


def test_ci_runs_exactly_the_readme_test_command():
  demo, tests = readme_commands()
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    assert tests in [line.strip() for line in f], f"{tests!r} is not a line of .ci/run"
  for command in (demo, tests):
    for part in command.split("&&"):
      program, *args = shlex.split(part)
      script = args[0] if program == "bash" else program
      assert os.path.exists(os.path.join(ROOT, script)), f"{script} (from the README) does not exist"


def test_the_readme_is_short_and_links_every_guide():
  text = read("README.md")
  assert len(text.splitlines()) <= 150
  for guide in GUIDES:
    assert f"(docs/{guide}.md)" in text, f"README does not link docs/{guide}.md"
    assert os.path.exists(os.path.join(ROOT, "docs", f"{guide}.md"))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_path_a_document_names_exists(document):
  """Backquoted repository paths (gkd/..., configs/..., experiments/..., ...) and linked files."""
  text = read(document)
  base = os.path.dirname(os.path.join(ROOT, document))
  named = re.findall(r"`((?:gkd|configs|experiments|tests|scripts|notebooks|docs)/[^`\s:*{]*)",
                     text)
  named = [p for p in named if not re.search(r"[A-Z]{3,}", p)]  # placeholders: configs/NAME.py
  missing = [p for p in named if not os.path.exists(os.path.join(ROOT, p.rstrip(".,;")))]
  links = [p for p in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if "://" not in p]
  missing += [p for p in links if not os.path.exists(os.path.join(base, p))]
  assert not missing, f"{document} names paths that do not exist: {missing}"


def _config_of(argv: list[str]):
  """The config a gkd command line builds: its file with its arg, then its --config.x=y
  overrides, parsed as the commands' own absl flags parse them."""
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog"] + [a for a in argv if a.startswith("--config=") or a.startswith("--config.")]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
  fv(argv)
  return fv.config


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_command_a_document_shows_names_a_real_module_config_and_fields(document):
  """Each `python -m gkd.X --config=...` line: the module exists, the config file builds with
  its arg, and every --config.a.b=v override sets an existing field (as absl would parse it)."""
  commands = command_lines(read(document))
  for line in commands:
    argv = shlex.split(line)
    module = argv[2]
    path = os.path.join(ROOT, *module.split("."))
    assert os.path.exists(path + ".py") or os.path.exists(os.path.join(path, "__main__.py")), \
        f"{document}: no module {module}"
    if any(a.startswith("--config=") for a in argv):
      cwd = os.getcwd()
      os.chdir(ROOT)  # config paths are relative to the repository root, as the commands run
      try:
        _config_of(argv)
      except Exception as e:  # noqa: BLE001 (the message names the command)
        raise AssertionError(f"{document}: {line!r} does not parse: {e}") from e
      finally:
        os.chdir(cwd)


def test_the_command_checks_can_fail():
  lines = command_lines("```\npython -m gkd.main --config=configs/testbed.py \\\n"
                        "  --config.no_such_field=1  # a comment\n```\n")
  assert lines == ["python -m gkd.main --config=configs/testbed.py    --config.no_such_field=1"]
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    with pytest.raises(Exception, match="no_such_field"):
      _config_of(shlex.split(lines[0]))
    assert _config_of(shlex.split("python -m gkd.main --config=configs/testbed.py:stage=gkd "
                                  "--config.train.num_steps=7")).train.num_steps == 7
  finally:
    os.chdir(cwd)


def _run(argv: list[str], tmp_path, name: str, timeout: int):
  argv = [arg if not arg.startswith("--workdir=") else f"--workdir={tmp_path / name}"
          for arg in argv]
  if argv[0] == "python":
    argv[0] = sys.executable  # "python" in the guides: the set-up's .venv, which runs this suite
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as for a user
  out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def _run_demo(tmp_path, *extra):
  demo = readme_commands()[0].split("&&")[-1]  # the set-up has run: this suite runs in its .venv
  return _run(shlex.split(demo) + list(extra), tmp_path, "demo", timeout=1200)


def _check_report(stdout: str, workdir) -> None:
  for name in ("report.md", "learning_curves.png", "eval_examples_start.jsonl"):
    assert os.path.exists(workdir / name), name
  assert "The teacher scores" in stdout and "accuracy (greedy)" in stdout
  assert "The teacher scores" in (workdir / "report.md").read_text()


@pytest.mark.e2e
def test_demo_command_runs_short(tmp_path, shared_data_dir):
  """The demo as written, two steps long on 20 examples, ends with its report."""
  stdout = _run_demo(tmp_path, "--config.train.num_steps=2", "--config.eval.num_examples=20")
  _check_report(stdout, tmp_path / "demo")
  assert os.path.exists(tmp_path / "demo" / "export" / "model.safetensors")


@pytest.mark.slow
def test_demo_command_runs_as_written(tmp_path, shared_data_dir):
  stdout = _run_demo(tmp_path)
  _check_report(stdout, tmp_path / "demo")
  assert "beyond its 95% CI" in stdout


@pytest.mark.slow
def test_pretrained_demo_runs_short(tmp_path, shared_data_dir):
  """The second demo (the real SmolLM2-135M-Instruct), as docs/config.md's table names it."""
  stdout = _run([sys.executable, "-m", "gkd.main", "--config=configs/demo_smollm2.py",
                 "--workdir=x", "--config.train.num_steps=2"], tmp_path, "smollm2", timeout=1800)
  assert "held-out KL(teacher‖student)" in stdout
  assert os.path.exists(tmp_path / "smollm2" / "report.md")


@pytest.mark.e2e
def test_own_data_example_runs_as_documented(tmp_path, monkeypatch):
  """docs/data.md's example, in its tiny-model form, trains end to end."""
  line = next(ln for ln in command_lines(read("docs/data.md"))
              if "configs/files.py:runlocal=true" in ln)
  monkeypatch.setenv("GKD_DATA_DIR", str(tmp_path / "tfds"))
  stdout = _run(shlex.split(line), tmp_path, "files", timeout=900)
  assert os.path.exists(tmp_path / "files" / "final_metrics.json")
  assert os.path.exists(tmp_path / "files" / "report.md")
  assert "accuracy (greedy)" in stdout
