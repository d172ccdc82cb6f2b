"""Helpers shared by several test files."""


def apply_overrides(config, overrides: dict):
  """Sets dotted keys in place, e.g. {"objective.temperature": 2.0}, as --config.x=y would."""
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return config
