"""Times matrix products in torch (its oneDNN/MKL CPU paths): the other half of cpu_profile.py.

  .venv-trl/bin/python experiments/benchmarks/torch_matmuls.py < shapes.json > times.json

Reads {"matmuls": [{"einsum": "mk,nk->mn", "lhs": [..], "rhs": [..], "dtype": "float32"}, ...],
"repeats": 5} on stdin and writes {"torch": version, "config": torch.__config__.show(),
"capability": the vector ISA torch dispatches to, "threads": ..., "seconds": [best time per
product]} on stdout. Each product runs through torch.einsum, which lowers to the same
matmul/bmm kernels as nn.Linear and the attention products.
"""

import json
import os
import sys
import time

import torch


def best_time(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def main():
  request = json.load(sys.stdin)
  torch.set_num_threads(os.cpu_count())
  gen = torch.Generator().manual_seed(0)
  seconds = []
  with torch.no_grad():
    for m in request["matmuls"]:
      dtype = getattr(torch, m["dtype"])
      a = torch.randn(m["lhs"], generator=gen).to(dtype)
      b = torch.randn(m["rhs"], generator=gen).to(dtype)
      seconds.append(best_time(lambda: torch.einsum(m["einsum"], a, b), request.get("repeats", 5)))
  json.dump({"torch": torch.__version__, "config": torch.__config__.show(),
             "capability": torch.backends.cpu.get_cpu_capability(),
             "mkldnn": torch.backends.mkldnn.is_available(), "threads": torch.get_num_threads(),
             "seconds": seconds}, sys.stdout)


if __name__ == "__main__":
  main()
