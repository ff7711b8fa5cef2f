"""Launched by tests/test_trainer_multiprocess.py under `accelerate launch --num_processes 2`.

Usage: ``train_two_processes.py OUT_DIR [MODE ...]`` with modes among ``full``, ``lora``,
``frozen`` and ``streaming`` (full training from an iterable dataset). Trains a tiny PRISM model for a few steps and writes, per rank and mode, a JSON file with what that rank saw and a hash
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
from prism_hf.utils import distributed


def weights_hash(model, backbone_only=False):
    """Hash of the weights; ``backbone_only`` hashes the backbone's own (non-LoRA) weights under PEFT-free names."""
    digest = hashlib.sha256()
    state = model.state_dict()
    if backbone_only:
        state = {
            name.replace("base_model.model.", "").replace(".base_layer", ""): tensor
            for name, tensor in state.items() if name.startswith("backbone.") and "lora_" not in name
        }
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RecordingTrainer(PrismTrainer):
    """Records, per step on this rank, the batch it trained on and how many (quality, target) pairs it made."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.__dict__.setdefault("seen_rows", []).extend(inputs["input_ids"][:, 0].tolist())
        loss, out = super().compute_loss(model, inputs, return_outputs=True)
        self.__dict__.setdefault("local_pairs", []).append(int(out.quality_valid.sum()))
        return (loss, out) if return_outputs else loss


def main(out_dir, mode="full"):
    out_dir = Path(out_dir)
    torch.manual_seed(0)
    model = PrismForMaskedDiffusion.from_backbone(tiny_llada())
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    initial, initial_backbone = weights_hash(model), weights_hash(model, backbone_only=True)
    rows = torch.randint(1, 60, (64, 12), generator=torch.Generator().manual_seed(0))
    rows[:, 0] = torch.arange(64)  # the first token identifies the example
    dataset = datasets.Dataset.from_dict({"input_ids": rows.tolist(), "prompt_length": [1] * 64})
    args = PrismTrainingArguments(
        output_dir=str(out_dir / f"run-{mode}"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=3,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, num_update_tokens=3, num_proposals=2,
        backbone_training="frozen" if mode == "frozen" else None,
    )
    if mode == "streaming":  # full training from an iterable dataset: accelerate dispatches its batches
        dataset = dataset.to_iterable_dataset()
    trainer = RecordingTrainer(model, args, train_dataset=dataset, peft_config=peft_config)
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
        "mode": mode,
        "destroys_group_at_exit": distributed._registered,
        "initial_hash": initial,
        "final_hash": weights_hash(trainer.accelerator.unwrap_model(trainer.model)),
        "initial_backbone_hash": initial_backbone,
        "final_backbone_hash": weights_hash(trainer.accelerator.unwrap_model(trainer.model), backbone_only=True),
    }
    (out_dir / f"rank{record['rank']}-{mode}.json").write_text(json.dumps(record))
    trainer.accelerator.wait_for_everyone()
    return trainer


if __name__ == "__main__":
    for trained_mode in sys.argv[2:] or ["full"]:
        main(sys.argv[1], trained_mode)
    # No destroy_process_group() here: the trainer registered prism_hf's exit handler, as a user's script relies on.
