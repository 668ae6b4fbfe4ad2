"""``experiments/benchmarks/gpu.py`` runs every code path at a tiny size on the CPU (its figures
need a GPU: see the README)."""

from __future__ import annotations

import torch

from nas_gym.experiments.benchmarks import gpu


def test_gpu_benchmark_runs_tiny_on_cpu(capsys, tmp_path) -> None:
    threads = torch.get_num_threads()
    out = gpu.main(["--tiny", "--json", str(tmp_path / "gpu.json")])
    assert torch.get_num_threads() == threads  # the benchmark leaves the process as it was
    assert out["device"] == "cpu" and out["children"] == 2 and out["params"] > 1000
    for key in ("bf16_s", "fp32_s", "resident_s", "loader_s", "nas_gym_s", "hand_s",
                "one_at_a_time_s", "at_once_s"):
        assert out[key] > 0, key
    assert 0 <= out["nas_gym_val_accuracy"] <= 1
    text = capsys.readouterr().out
    for line in ("1. bf16 autocast", "2. device-resident data", "3. nas_gym training",
                 "4. 2 children"):
        assert line in text
    assert (tmp_path / "gpu.json").stat().st_size > 0
