"""`python -m fer_hf.bench data --quick`: both pipelines run on real faces and the headline line is printed."""

from __future__ import annotations

import re

import pytest
import torch

from fer_hf.bench.__main__ import main

HEADLINE = re.compile(r"data pipeline: fer_hf (\d+) img/s, per-sample baseline (\d+) img/s, ratio (\d+\.\d)")


def test_bench_data_quick(shared_fer, capsys):
    threads = torch.get_num_threads()
    source = str(shared_fer / "train.parquet")
    assert main(["data", "--quick", "--threads", "1", "--source", source]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = HEADLINE.fullmatch(lines[-1])
    assert match, lines[-1]
    ours, baseline, ratio = int(match[1]), int(match[2]), float(match[3])
    assert ratio > 1 and ours > baseline > 0
    assert abs(ratio - ours / baseline) < 0.1 + 0.05 * ratio  # the printed rates are rounded
    assert "128 real faces" in lines[0]
    assert torch.get_num_threads() == threads  # --threads is undone afterwards


def test_bench_dispatch_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "invalid choice" in capsys.readouterr().err
