"""PrismTrainer under `accelerate launch` with 2 CPU processes (DDP over gloo)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "train_two_processes.py"
MODES = ("full", "lora", "frozen", "streaming")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="the accelerate CLI is not installed")
def test_two_processes_train_on_different_data_and_end_with_identical_weights(tmp_path):
    """One launch trains the modes in turn (full, LoRA, frozen, full from a streaming dataset) to keep it short."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(2):
        command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(SCRIPT), str(tmp_path), *MODES]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        # The free port can be taken by another program between our probe and the launch: retry that case once.
        if result.returncode == 0 or "address already in use" not in (result.stdout + result.stderr).lower():
            break
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for mode in MODES:
        ranks = [json.loads((tmp_path / f"rank{r}-{mode}.json").read_text()) for r in (0, 1)]
        for rank, record in enumerate(ranks):
            assert record["rank"] == rank and record["world_size"] == 2 and record["mode"] == mode
            assert record["destroys_group_at_exit"]  # else gloo can abort a finished rank at exit
            assert record["global_step"] == 3 and record["compute_loss_calls"] == 3
            assert record["final_hash"] != record["initial_hash"], mode  # this rank's model trained
            # only a fully trained backbone moves; LoRA and frozen leave its own weights as they were
            assert (record["final_backbone_hash"] != record["initial_backbone_hash"]) == (mode in ("full", "streaming")), mode
        # Same start, same end: DDP kept the replicas in sync.
        assert ranks[0]["initial_hash"] == ranks[1]["initial_hash"]
        assert ranks[0]["final_hash"] == ranks[1]["final_hash"], mode
        # Each rank saw its own shard of the data and drew its own masks (with one RNG stream seeded alike on
        # both ranks the masks, hence these counts, would be identical).
        assert not set(ranks[0]["seen_rows"]) & set(ranks[1]["seen_rows"])
        assert ranks[0]["local_pairs"] != ranks[1]["local_pairs"], mode
        # Metrics are gathered across ranks: the logged count of (quality, target) pairs is the sum over both.
        assert ranks[0]["logged"] == ranks[1]["logged"]
        assert ranks[0]["logged_pairs"] == sum(ranks[0]["local_pairs"]) + sum(ranks[1]["local_pairs"]), mode
