"""PRISM fine-tuning of LLaDA-8B-Instruct (LoRA) on OpenCoder-LLM/opc-sft-stage2, the paper's code recipe.

Multi-GPU (see examples/accelerate_configs/ and docs/code.md):

    accelerate launch --config_file examples/accelerate_configs/zero2.yaml examples/train_code.py \\
        --config examples/configs/llada_code.yaml

Offline smoke run on a tiny LLaDA (the native port at width 64, in the Hub's folder layout; two CPU processes):

    python examples/make_tiny_llada.py --output data/tiny-llada
    python examples/make_tiny_code_data.py --output data/tiny_code.jsonl
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 examples/train_code.py \\
        --model_name_or_path data/tiny-llada --data_files data/tiny_code.jsonl \\
        --output_dir runs/tiny-code --max_steps 4 --per_device_train_batch_size 2 --gradient_accumulation_steps 1 \\
        --bf16 false --activation_checkpointing false --lora_r 4 --lora_alpha 4 --max_length 128

Defaults are the LLaDA recipe of the method: LoRA r=256, alpha=256, dropout 0.1 on q/k/v; ``mlp`` head;
k=8 positions chosen by confidence with greedy proposals; lambda=0.5; lr 1e-4 (head and LoRA), weight decay
0.1; max length 1024; only response tokens masked; bf16; global batch 144 (8 GPUs x 2 x 9 accumulation).
Any argument can be given in a YAML file with ``--config`` (command-line flags override it).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from transformers import AutoTokenizer

from prism_hf.training.trainer import PrismTrainer
from prism_hf.training.training_args import PrismTrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arguments import parse_args_with_config, prism_model_from_arguments, train_resume_save  # noqa: E402

logger = logging.getLogger("train_code")

DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class ModelArguments:
    """Which backbone to wrap and how."""

    model_name_or_path: str = field(
        default="GSAI-ML/LLaDA-8B-Instruct", metadata={"help": "Hub id or local folder of the masked diffusion backbone."}
    )
    revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the backbone."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Only for a backbone or tokenizer without a native implementation in prism_hf: LLaDA, Dream and "
                          "MDLM load with prism_hf.models and never need it. Never turned on for you."},
    )
    head_type: str = field(default="mlp", metadata={"help": "Quality head: linear, mlp or transformer."})
    dtype: str = field(default="bfloat16", metadata={"help": "Backbone load dtype: bfloat16, float16, float32 or auto."})
    use_lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter on the backbone (else full fine-tune)."})
    lora_r: int = field(default=256, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj"], metadata={"help": "Modules that get LoRA adapters."}
    )


@dataclass
class DataArguments:
    """Where the instruction data comes from and how it is turned into prompt + response."""

    dataset_name: Optional[str] = field(
        default="OpenCoder-LLM/opc-sft-stage2", metadata={"help": "Hub dataset name (ignored when --data_files is given)."}
    )
    dataset_config: Optional[str] = field(default="educational_instruct", metadata={"help": "Hub dataset configuration."})
    dataset_split: str = field(default="train", metadata={"help": "Split to train on."})
    data_files: Optional[List[str]] = field(
        default=None, metadata={"help": "Local json/jsonl/parquet/csv files with the same columns (overrides dataset_name)."}
    )
    prompt_column: str = field(default="instruction", metadata={"help": "Column holding the user prompt."})
    response_column: str = field(default="output", metadata={"help": "Column holding the response to learn."})
    system_prompt: Optional[str] = field(default=None, metadata={"help": "Optional system message for the chat template."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N rows."})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": "Processes for tokenisation."})


@dataclass
class CodeTrainingArguments(PrismTrainingArguments):
    """PrismTrainingArguments with the LLaDA code recipe as defaults."""

    output_dir: str = field(default="runs/prism-llada-code", metadata={"help": "Where checkpoints go."})
    num_update_tokens: int = field(default=8, metadata={"help": "k: positions filled per proposal."})
    update_selection: str = field(default="confidence", metadata={"help": "How the k positions are chosen."})
    proposal_temperature: float = field(default=0.0, metadata={"help": "0 = greedy proposals (LLaDA recipe)."})
    mdm_loss_weight: float = field(default=0.5, metadata={"help": "lambda."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the head and the LoRA adapter."})
    weight_decay: float = field(default=0.1, metadata={"help": "Weight decay."})
    max_length: Optional[int] = field(default=1024, metadata={"help": "Longest prompt + response (tokens)."})
    truncation: bool = field(default=True, metadata={"help": "Cut longer examples (the response end) instead of failing."})
    mask_padding: bool = field(default=True, metadata={"help": "LLaDA SFT: pad with EOS, which is attended to and masked."})
    bf16: bool = field(default=True, metadata={"help": "bf16 mixed precision."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Per-GPU micro-batch."})
    gradient_accumulation_steps: int = field(default=9, metadata={"help": "8 GPUs x 2 x 9 = global batch 144."})
    activation_checkpointing: bool = field(default=True, metadata={"help": "Gradient checkpointing: recompute activations to fit 8B + LoRA."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the data."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.03, metadata={"help": "Warm-up (a fraction < 1 is a ratio of the steps)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every N steps."})


def parse_args(argv: Optional[List[str]] = None):
    """Parse the arguments (``--config file.yaml`` supplies defaults; flags override it)."""
    model_args, data_args, training_args = parse_args_with_config((ModelArguments, DataArguments, CodeTrainingArguments), argv)
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id <user/repo> (the repo the PRISM checkpoint is pushed to).")
    return model_args, data_args, training_args


def load_instruction_dataset(data_args: DataArguments):
    """The Hub dataset by name, or local files with the same columns; checks the columns exist."""
    from datasets import load_dataset

    if data_args.data_files:
        suffixes = {Path(f).suffix.lower() for f in data_args.data_files}
        builders = {DATA_FILE_BUILDERS.get(s) for s in suffixes}
        if None in builders or len(builders) != 1:
            raise ValueError(
                f"data_files={data_args.data_files}: use files of one type among {sorted(DATA_FILE_BUILDERS)}."
            )
        dataset = load_dataset(builders.pop(), data_files=list(data_args.data_files), split="train")
    else:
        dataset = load_dataset(data_args.dataset_name, data_args.dataset_config, split=data_args.dataset_split)
    missing = [c for c in (data_args.prompt_column, data_args.response_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the columns {missing} (it has {dataset.column_names}). Set --prompt_column / "
            "--response_column to the columns holding the prompt and the response."
        )
    if data_args.max_train_samples is not None:
        dataset = dataset.select(range(min(data_args.max_train_samples, len(dataset))))
    return dataset


def tokenize_prompt_response(tokenizer, prompt: str, response: str, system_prompt: Optional[str] = None) -> Dict[str, Any]:
    """Chat template for the prompt (with the generation prompt), then the response and EOS.

    Returns ``input_ids`` and ``prompt_length`` (the collator never masks the first ``prompt_length`` tokens).
    """
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no eos_token_id; the response must end with EOS for generation to stop.")
    return {"input_ids": list(prompt_ids) + list(response_ids) + [tokenizer.eos_token_id], "prompt_length": len(prompt_ids)}


def main(argv: Optional[List[str]] = None):
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if training_args.process_index == 0 else logging.WARNING)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.revision, trust_remote_code=model_args.trust_remote_code
    )
    dataset = load_instruction_dataset(data_args)
    with training_args.main_process_first(desc="tokenize"):
        dataset = dataset.map(
            lambda row: tokenize_prompt_response(tokenizer, row[data_args.prompt_column], row[data_args.response_column], data_args.system_prompt),
            remove_columns=dataset.column_names,
            num_proc=data_args.preprocessing_num_workers,
            desc="chat template",
        )
    model = prism_model_from_arguments(model_args, tokenizer)
    peft_config = None
    if model_args.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=list(model_args.lora_target_modules),
            bias="none",
        )
    # The collator pads with EOS (LLaDA SFT), so the processing class must say EOS is the pad token.
    if training_args.mask_padding:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = PrismTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result = train_resume_save(trainer, tokenizer)
    return result


if __name__ == "__main__":
    main()
