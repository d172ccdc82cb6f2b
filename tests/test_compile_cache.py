"""The persistent compilation cache: where it lives, how it is turned off, and that a rerun of
the same config loads its programs instead of compiling them."""

import os
import subprocess
import sys

import jax
import pytest

from gkd.train import compile_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("environ, expected", [
    ({}, os.path.join(os.path.expanduser("~"), ".cache", "gkd", "jax")),
    ({"XDG_CACHE_HOME": "/x/cache"}, "/x/cache/gkd/jax"),
    ({"GKD_COMPILATION_CACHE": "/y/jax", "XDG_CACHE_HOME": "/x"}, "/y/jax"),
    ({"GKD_COMPILATION_CACHE": "off"}, None),
    ({"GKD_COMPILATION_CACHE": "OFF", "XDG_CACHE_HOME": "/x"}, None),
    ({"JAX_COMPILATION_CACHE_DIR": "/z"}, None),  # the user's own JAX setting stays
    ({"JAX_COMPILATION_CACHE_DIR": "/z", "GKD_COMPILATION_CACHE": "/y"}, "/y"),
])
def test_the_directory_the_environment_asks_for(environ, expected):
  assert compile_cache.directory(environ) == expected


def test_enable_and_off_set_jax_config(tmp_path):
  before = jax.config.jax_compilation_cache_dir
  try:
    path = str(tmp_path / "c")
    assert compile_cache.enable({"GKD_COMPILATION_CACHE": path}) == path
    assert jax.config.jax_compilation_cache_dir == path and os.path.isdir(path)
    assert compile_cache.enable({"GKD_COMPILATION_CACHE": "off"}) is None
    assert jax.config.jax_compilation_cache_dir is None
  finally:
    jax.config.update("jax_compilation_cache_dir", before)


@pytest.mark.e2e
def test_a_rerun_loads_the_train_step_from_the_cache(tmp_path):
  """Two runs of one config: the first compiles and stores its programs, the second loads them
  (JAX logs each hit when jax_log_compiles is on)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(GKD_COMPILATION_CACHE=str(tmp_path / "cache"), GKD_DATA_DIR=str(tmp_path / "tfds"),
             JAX_LOG_COMPILES="1")
  logs = []
  for run in ("cold", "warm"):
    out = subprocess.run(
        [sys.executable, "-m", "gkd.main", "--config=configs/testbed.py:runlocal=true",
         f"--workdir={tmp_path / run}", "--config.train.num_steps=1",
         "--config.train.progress_bar=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    logs.append(out.stderr)
  assert os.listdir(tmp_path / "cache")
  hit = "Persistent compilation cache hit for 'jit_train_step'"
  assert "Compiling jit(train_step)" in logs[0] and hit not in logs[0]
  assert hit in logs[1]
