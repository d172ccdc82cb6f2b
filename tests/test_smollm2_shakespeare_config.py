"""configs/smollm2_shakespeare.py: its two stages chain (SFT export -> distillation start) and
its sweep compares the three methods from one start, the paired baseline first."""

import os
import sys

import pytest

from helpers import ROOT, apply_overrides

sys.path.insert(0, ROOT)
from configs import smollm2_shakespeare as cfg  # noqa: E402
from gkd.train import loop  # noqa: E402


pytestmark = pytest.mark.e2e  # every test here trains or drives the command line


def test_sweep_starts_with_sft_and_shares_the_start():
  points = cfg.get_sweep("seeds=2")
  assert [p.get("mode") for p in points[:3]] == ["sft", None, None]
  assert points[1]["objective.divergence"] == "forward_kl" and points[1]["mix.student"] == 0.0
  assert [p["seed"] for p in points] == [0, 0, 0, 1, 1, 1]
  c = cfg.get_config()
  assert (c.mix.student, c.objective.divergence_kw["beta"]) == (1.0, 0.9)  # the on-policy point
  assert c.student.path == cfg.SFT == cfg.get_config("stage=gkd").student.path
  own = cfg.get_config("stage=gkd,student=gguf").student  # the teacher's own test metrics
  assert (own.source, own.path) == ("gguf", "")


@pytest.mark.slow  # SFT, export and a pretrained student each run by default elsewhere
def test_runlocal_stages_chain(tmp_path):
  sft = cfg.get_config("stage=sft,runlocal=true")
  sft.train.progress_bar = False
  assert "forward_kl" not in loop.train(sft, str(tmp_path / "sft"))  # SFT runs no teacher
  export = str(tmp_path / "sft" / "export")
  assert os.path.isdir(export)
  gkd = cfg.get_config("stage=gkd,runlocal=true")  # runlocal inits both: point it at the export
  apply_overrides(gkd, {"student.source": "pretrained", "student.path": export,
                        "train.progress_bar": False})
  metrics = loop.train(gkd, str(tmp_path / "gkd"))
  assert "forward_kl" in metrics  # a distillation run: the teacher is there to compare with
