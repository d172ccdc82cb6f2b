"""Percentile-bootstrap confidence intervals for eval metrics, within and across runs.

The data of one method is a matrix `[seeds, examples]`: row s holds the per-example metric of
the run with seed s on the evaluation examples (the same examples, in the same order, in every
row). One run is a single row; run-level numbers only (no per-example data) are one column.

The bootstrap resamples seeds and examples *jointly*, each with replacement: a resample takes
S rows and N columns drawn at random and averages the S×N block. This accounts for both
sources of noise (which examples were drawn into the test set, and the training seed), and it
reduces to the plain bootstrap over examples for one run and over seeds for run-level data.

A paired comparison of two methods uses the same row and column draws for both, so that
example difficulty and seed effects shared by the methods cancel in the difference. Without a
shared example order (see gkd.eval.summary's fallbacks) the methods are resampled independently,
which ignores that correlation and so gives a wider, conservative interval.

With only a handful of seeds and no per-example data, a percentile bootstrap over seeds is
known to be too narrow (3 seeds have at most 10 distinct resamples): read such intervals as a
spread, not as a 95% guarantee.

Everything is deterministic given `seed`.
"""

import dataclasses

import numpy as np

_CHUNK = 1000  # resamples drawn at a time: bounds memory at CHUNK × examples counts
Z_95 = 1.959964  # the standard normal's 0.975 quantile: a 95% interval's half-width, in SEs
Z_POWER_80 = 0.841621  # its 0.8 quantile: the further SEs an effect needs to be found 80% of the time


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate with a two-sided bootstrap confidence interval [low, high]."""
  mean: float
  low: float
  high: float
  num_seeds: int
  num_examples: int

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2

  @property
  def excludes_zero(self) -> bool:
    """True when the interval lies strictly on one side of 0 (NaN intervals exclude nothing)."""
    return bool(self.low > 0 or self.high < 0)


def _as_matrix(values, name: str) -> np.ndarray:
  x = np.asarray(values, dtype=np.float64)
  if x.ndim == 1:
    x = x[None, :]
  if x.ndim != 2 or x.size == 0:
    raise ValueError(f"{name}: expected a non-empty [seeds, examples] matrix or a 1-D array, "
                     f"got shape {np.shape(values)}.")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: contains NaN or infinite values.")
  return x


def _counts(rng: np.random.Generator, num_draws: int, n: int) -> np.ndarray:
  """[num_draws, n] multiplicities of an n-out-of-n draw with replacement, one row per draw."""
  idx = rng.integers(0, n, size=(num_draws, n)) + n * np.arange(num_draws)[:, None]
  return np.bincount(idx.ravel(), minlength=num_draws * n).reshape(num_draws, n)


def _resampled_means(x: np.ndarray, num_resamples: int, seed: int) -> np.ndarray:
  """Means of `num_resamples` joint seed × example resamples of x (rows: seeds, cols: examples).

  The mean of a resampled block is  Σ_s Σ_e c_s w_e x[s, e] / (S N)  where c and w are the
  draw multiplicities of the rows and columns: no block is materialised.
  """
  s, n = x.shape
  rng = np.random.default_rng(seed)
  out = []
  for start in range(0, num_resamples, _CHUNK):
    b = min(_CHUNK, num_resamples - start)
    rows = _counts(rng, b, s) if s > 1 else np.ones((b, 1))
    cols = _counts(rng, b, n) if n > 1 else np.ones((b, 1))
    out.append(np.einsum("bs,sn,bn->b", rows, x, cols) / (s * n))
  return np.concatenate(out)


def _interval(x: np.ndarray, estimates: np.ndarray, confidence: float) -> Interval:
  tail = 100 * (1 - confidence) / 2
  low, high = (np.percentile(estimates, [tail, 100 - tail]) if x.size > 1 else (np.nan, np.nan))
  return Interval(float(x.mean()), float(low), float(high), num_seeds=x.shape[0],
                  num_examples=x.shape[1])


def _check(confidence: float, num_resamples: int):
  if not 0 < confidence < 1:
    raise ValueError(f"confidence={confidence} must lie in (0, 1).")
  if num_resamples < 1:
    raise ValueError(f"num_resamples={num_resamples} must be >= 1.")


def mean_ci(values, *, confidence: float = 0.95, num_resamples: int = 10_000,
            seed: int = 0) -> Interval:
  """Bootstrap CI of the mean of `values`: a 1-D array (one run's examples, or one number per
  seed) or a [seeds, examples] matrix. A single value has no interval (low = high = NaN)."""
  _check(confidence, num_resamples)
  x = _as_matrix(values, "values")
  return _interval(x, _resampled_means(x, num_resamples, seed), confidence)


def paired_difference_ci(a, b, *, confidence: float = 0.95, num_resamples: int = 10_000,
                         seed: int = 0) -> Interval:
  """Bootstrap CI of mean(a) − mean(b) for two methods measured on the same seeds (rows) and
  the same examples (columns), resampling both with the same draws."""
  _check(confidence, num_resamples)
  xa, xb = _as_matrix(a, "a"), _as_matrix(b, "b")
  if xa.shape != xb.shape:
    raise ValueError(f"Paired data must have one shape (same seeds, same examples); got "
                     f"{xa.shape} and {xb.shape}.")
  d = xa - xb  # the mean is linear: resampling the difference equals differencing the resamples
  return _interval(d, _resampled_means(d, num_resamples, seed), confidence)


def unpaired_difference_ci(a, b, *, confidence: float = 0.95, num_resamples: int = 10_000,
                           seed: int = 0) -> Interval:
  """Bootstrap CI of mean(a) − mean(b), resampling the two independently (for data that cannot
  be paired). The interval's num_seeds/num_examples are the smaller of the two sides'."""
  _check(confidence, num_resamples)
  xa, xb = _as_matrix(a, "a"), _as_matrix(b, "b")
  estimates = (_resampled_means(xa, num_resamples, seed)
               - _resampled_means(xb, num_resamples, seed + 1))
  tail = 100 * (1 - confidence) / 2
  low, high = (np.percentile(estimates, [tail, 100 - tail]) if xa.size + xb.size > 2
               else (np.nan, np.nan))
  return Interval(float(xa.mean() - xb.mean()), float(low), float(high),
                  num_seeds=min(xa.shape[0], xb.shape[0]),
                  num_examples=min(xa.shape[1], xb.shape[1]))


def standard_error(interval: Interval) -> float:
  """The standard error a 95% interval implies in the normal approximation: half-width / z_0.975."""
  return interval.half_width / Z_95


def detectable_effect(interval: Interval) -> float:
  """The smallest true difference that a comparison with this 95% interval's width finds (its
  interval excludes 0) with 80% power: (z_0.975 + z_0.8) × the standard error."""
  return (Z_95 + Z_POWER_80) * standard_error(interval)
