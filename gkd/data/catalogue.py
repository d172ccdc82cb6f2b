"""Catalogue datasets from local files (in progress)."""

GSM8K_DEFAULTS = XSUM_DEFAULTS = WMT_DEFAULTS = (("seed", 0),)


def _missing(*args, **kwargs):
  raise NotImplementedError("catalogue datasets are not implemented yet")


generate_gsm8k = generate_xsum = generate_wmt = _missing
