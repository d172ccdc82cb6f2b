"""JAX's persistent compilation cache for command-line runs, on by default.

A run compiles its train step, its samplers and its evaluator before the first step; with the
cache on, a rerun of the same config (or a resumed one) loads those programs from disk instead.
Where the cache lives, in order:
  GKD_COMPILATION_CACHE=DIR   that directory; `off` turns the cache off;
  JAX_COMPILATION_CACHE_DIR   JAX's own setting, when the user set it, is left as it is;
  otherwise                   $XDG_CACHE_HOME/gkd/jax (~/.cache/gkd/jax when XDG_CACHE_HOME is unset).
Programs that compile in under MIN_COMPILE_SECS are not stored: they cost more files than time.
"""

import os

import jax

ENV = "GKD_COMPILATION_CACHE"
OFF = "off"
# Below JAX's default threshold (1 s): a small model's samplers and eval programs each compile in
# less on a quiet CPU, and together they are most of a small run's start.
MIN_COMPILE_SECS = 0.1


def directory(environ=os.environ) -> str | None:
  """The cache directory the environment asks for (see the module docstring); None: off, or
  JAX's own setting holds."""
  chosen = environ.get(ENV, "").strip()
  if chosen.lower() == OFF:
    return None
  if chosen:
    return os.path.expanduser(chosen)
  if environ.get("JAX_COMPILATION_CACHE_DIR"):
    return None
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "gkd", "jax")


def enable(environ=os.environ) -> str | None:
  """Points JAX's persistent cache at `directory(environ)`; returns the directory in use (None
  when off). Call once, before anything compiles."""
  path = directory(environ)
  if path is None:
    if environ.get(ENV, "").strip().lower() == OFF:
      jax.config.update("jax_compilation_cache_dir", None)
    return jax.config.jax_compilation_cache_dir
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
  return path
