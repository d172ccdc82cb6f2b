"""Split names and split seeds, shared by every task.

Each split of a generated task draws from its own random stream, `split_seed(seed, split)`, so
that changing the size of one split never changes the examples of another. `carve` makes the
validation and test splits of a source that comes as one list of rows.
"""

from __future__ import annotations

import numpy as np

from gkd.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
_OFFSET = {"train": 0, "validation": 1, "test": 2}


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")


def split_seed(seed: int, split: str) -> int:
  """The seed of `split`'s own stream for task seed `seed` (1000*seed + 0/1/2)."""
  check_split(split)
  return 1000 * seed + _OFFSET[split]


def size_of(size: float, n: int, name: str) -> int:
  """A split size given as a fraction (0 <= size < 1) or a count (size >= 1) of `n` rows.

  A positive fraction gives at least one row, so a small file still has every split.
  """
  if size < 0:
    raise ConfigError(f"data.task_kwargs.{name}={size} must be >= 0 (a fraction below 1 or a "
                      "count).")
  if size >= 1:
    if size != int(size):
      raise ConfigError(f"data.task_kwargs.{name}={size}: a count must be a whole number (or a "
                        "fraction < 1).")
    return int(size)
  return max(1, round(size * n)) if size > 0 else 0


def carve(n: int, seed: int, validation_size: float, test_size: float,
          splits: tuple[str, ...] = ("validation", "test")) -> dict[str, list[int]]:
  """Row indices of a seeded split of `n` rows into train and the `splits` carved from it.

  Sizes are fractions (< 1) or counts (>= 1), see `size_of`. The test rows are drawn first,
  then validation, from one permutation seeded by `seed`; each split keeps the rows' order.
  """
  sizes = {"validation": size_of(validation_size, n, "validation_size") if "validation" in splits
           else 0, "test": size_of(test_size, n, "test_size") if "test" in splits else 0}
  if sizes["validation"] + sizes["test"] >= n:
    raise DataError(f"Cannot carve {sizes['validation']} validation and {sizes['test']} test "
                     f"rows out of {n} and leave any for training.")
  order = np.random.default_rng(seed).permutation(n).tolist()
  test = order[:sizes["test"]]
  validation = order[sizes["test"]:sizes["test"] + sizes["validation"]]
  train = order[sizes["test"] + sizes["validation"]:]
  out = {"train": sorted(train)}
  for split, rows in (("validation", validation), ("test", test)):
    if split in splits:
      out[split] = sorted(rows)
  return out
