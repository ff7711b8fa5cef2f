"""Launched by tests/test_trainer_multiprocess.py under `accelerate launch --num_processes 2`.

Trains a tiny PRISM model for a few steps and writes, per rank, a JSON file with what that rank saw and a hash
of its final weights, so that the test can check that both ranks trained, on different data, and ended equal.
"""

import hashlib
import json
import sys
from pathlib import Path

import datasets
import torch

from prism_hf.modeling_prism import PrismForMaskedDiffusion
from prism_hf.testing import tiny_llada
from prism_hf.trainer import PrismTrainer
from prism_hf.training_args import PrismTrainingArguments


def weights_hash(model):
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RecordingTrainer(PrismTrainer):
    """Records, per step on this rank, the batch it trained on and how many (quality, target) pairs it made."""

    seen_rows = []
    local_pairs = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.seen_rows.extend(inputs["input_ids"][:, 0].tolist())
        loss, out = super().compute_loss(model, inputs, return_outputs=True)
        self.local_pairs.append(int(out.quality_valid.sum()))
        return (loss, out) if return_outputs else loss


def main(out_dir):
    out_dir = Path(out_dir)
    torch.manual_seed(0)
    model = PrismForMaskedDiffusion.from_backbone(tiny_llada())
    initial = weights_hash(model)
    rows = torch.randint(1, 60, (64, 12), generator=torch.Generator().manual_seed(0))
    rows[:, 0] = torch.arange(64)  # the first token identifies the example
    dataset = datasets.Dataset.from_dict({"input_ids": rows.tolist(), "prompt_length": [1] * 64})
    args = PrismTrainingArguments(
        output_dir=str(out_dir / "run"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=3,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, num_update_tokens=3, num_proposals=2,
        ddp_find_unused_parameters=False,
    )
    trainer = RecordingTrainer(model, args, train_dataset=dataset)
    trainer.train()
    logged = next(e for e in trainer.state.log_history if "quality_num_positions" in e)
    record = {
        "rank": trainer.accelerator.process_index,
        "world_size": trainer.accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "compute_loss_calls": len(trainer.local_pairs),
        "seen_rows": trainer.seen_rows,
        "local_pairs": trainer.local_pairs,
        "logged_pairs": logged["quality_num_positions"],
        "logged": {k: v for k, v in logged.items() if isinstance(v, (int, float))},
        "initial_hash": initial,
        "final_hash": weights_hash(trainer.accelerator.unwrap_model(trainer.model)),
    }
    (out_dir / f"rank{record['rank']}.json").write_text(json.dumps(record))
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_initialized():
        # Without an orderly shutdown the gloo threads can abort the process at interpreter exit.
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
