"""PRISM fine-tuning of MDLM-170M on OpenWebText, the paper's unconditional text recipe.

With the Hub and GPUs (see docs/text.md for the flags; MDLM loads through the native port, no remote code):

    accelerate launch --config_file examples/accelerate_configs/ddp.yaml examples/train_text.py \\
        --config examples/configs/mdlm_owt.yaml

Offline smoke run on the tiny stand-ins (what tests/test_text_examples.py runs):

    python examples/text_corpus.py --output_dir data/tiny_text
    python examples/train_text.py --config examples/configs/mdlm_owt_tiny.yaml

Defaults are the text recipe of the method, as the public OWT code runs it: a ``transformer`` quality head (one
extra block, then a linear layer) on a fully fine-tuned backbone; k=8 positions chosen uniformly at random, filled
with proposals drawn from the top-p 0.9 nucleus of the posterior, one draw shared by the n_y=4 copies (each copy
fills its own positions; ``--proposal_top_p 1.0 --share_proposal_draws false`` draws from the whole posterior,
independently per copy, as this script did before); lambda=0.5; lr 1.5e-4; global batch 256; 20k steps; sequence length 1024
(OpenWebText packed as MDLM packs it: every document ends with EOS, the stream is cut into blocks of
``max_length - 2`` tokens and each block is wrapped in BOS ... EOS); the last 100,000 documents are held out
(MDLM's ``openwebtext-split``) for MAUVE in ``eval_text.py``. Any argument can be given in a YAML file with
``--config`` (command-line flags override it). ``--global_batch_size`` sets the gradient accumulation from the
number of processes, so the same config gives batch 256 on 1, 2, 4 or 8 GPUs.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Dict, List, Optional

from transformers import AutoTokenizer

from prism_hf.training.trainer import PrismTrainer
from prism_hf.training.training_args import PrismTrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arguments import parse_args_with_config, prism_model_from_arguments, train_resume_save  # noqa: E402

logger = logging.getLogger("train_text")

#: File suffix -> `datasets` builder for local data files.
DATA_FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class ModelArguments:
    """Which backbone to wrap and how."""

    model_name_or_path: str = field(
        default="kuleshov-group/mdlm-owt", metadata={"help": "Hub id or local folder of the MDLM backbone."}
    )
    tokenizer_name: Optional[str] = field(
        default="gpt2", metadata={"help": "Tokenizer (MDLM-OWT uses GPT-2's; None = the backbone's folder)."}
    )
    revision: Optional[str] = field(default=None, metadata={"help": "Hub revision of the backbone."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Only for remote-code backbones (not needed for MDLM: prism_hf ports it). Never turned on for you."}
    )
    head_type: str = field(default="transformer", metadata={"help": "Quality head: linear, mlp or transformer."})
    dtype: str = field(default="float32", metadata={"help": "Backbone load dtype (float32 + bf16 autocast by default)."})


@dataclass
class DataArguments:
    """Where the text comes from and how it is packed."""

    dataset_name: Optional[str] = field(
        default="Skylion007/openwebtext", metadata={"help": "Hub dataset name (ignored when --data_files is given)."}
    )
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Hub dataset configuration."})
    dataset_split: str = field(default="train", metadata={"help": "Split to read."})
    data_files: Optional[List[str]] = field(
        default=None, metadata={"help": "Local .txt (one document per line) or json/jsonl/parquet/csv files."}
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    holdout_last_n: int = field(
        default=100_000,
        metadata={"help": "Documents at the end of the split kept out of training (MDLM's OWT validation split); 0 = none."},
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Keep only the first N documents."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it first."})
    wrap_bos_eos: bool = field(default=True, metadata={"help": "Wrap every packed block in BOS ... EOS (MDLM)."})
    preprocessing_num_workers: Optional[int] = field(default=None, metadata={"help": "Processes for tokenisation."})


@dataclass
class TextTrainingArguments(PrismTrainingArguments):
    """PrismTrainingArguments with the MDLM-OWT text recipe as defaults."""

    output_dir: str = field(default="runs/prism-mdlm-owt", metadata={"help": "Where checkpoints go."})
    num_update_tokens: int = field(default=8, metadata={"help": "k: positions filled per proposal."})
    num_proposals: int = field(default=4, metadata={"help": "n_y: proposals per masked input."})
    update_selection: str = field(default="random", metadata={"help": "How the k positions are chosen."})
    proposal_temperature: float = field(default=1.0, metadata={"help": "Proposals drawn from the posterior."})
    proposal_top_p: Optional[float] = field(
        default=0.9, metadata={"help": "Top-p nucleus of the proposal draws (public OWT recipe: 0.9); 1.0 = whole posterior."}
    )
    share_proposal_draws: bool = field(
        default=True, metadata={"help": "One proposal draw shared by the n_y copies (public OWT recipe: num_x0_xt=1)."}
    )
    mdm_loss_weight: float = field(default=0.5, metadata={"help": "lambda."})
    backbone_training: Optional[str] = field(default="full", metadata={"help": "full, lora or frozen."})
    learning_rate: float = field(default=1.5e-4, metadata={"help": "Learning rate (head and backbone)."})
    max_steps: int = field(default=20_000, metadata={"help": "Optimizer steps."})
    max_length: Optional[int] = field(default=1024, metadata={"help": "Sequence length: documents are packed to it."})
    antithetic: bool = field(default=True, metadata={"help": "Stratified masking rates over the batch (MDLM)."})
    global_batch_size: Optional[int] = field(
        default=256,
        metadata={"help": "Sequences per optimizer step over all processes; sets gradient_accumulation_steps. None = use it as given."},
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Per-GPU micro-batch."})
    bf16: bool = field(default=True, metadata={"help": "bf16 mixed precision."})
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=500, metadata={"help": "Warm-up steps (a fraction < 1 is a ratio)."})
    logging_steps: float = field(default=50, metadata={"help": "Log every N steps."})
    save_steps: float = field(default=1000, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: Optional[int] = field(default=3, metadata={"help": "Checkpoints kept."})


def parse_args(argv: Optional[List[str]] = None, dataclass_types=(ModelArguments, DataArguments, TextTrainingArguments)):
    """Parse the arguments (``--config file.yaml`` supplies defaults; flags override it)."""
    return parse_args_with_config(dataclass_types, argv)


def set_global_batch_size(training_args: TextTrainingArguments) -> None:
    """Set ``gradient_accumulation_steps`` so that micro-batch x processes x accumulation = ``global_batch_size``."""
    target = training_args.global_batch_size
    if target is None:
        return
    per_step = training_args.per_device_train_batch_size * training_args.world_size
    if target < 1 or target % per_step != 0:
        raise ValueError(
            f"global_batch_size={target} is not a positive multiple of per_device_train_batch_size "
            f"({training_args.per_device_train_batch_size}) x processes ({training_args.world_size}) = {per_step}; "
            "change --per_device_train_batch_size or --global_batch_size (or pass --global_batch_size None)."
        )
    training_args.gradient_accumulation_steps = target // per_step


def _column_names(dataset) -> Optional[List[str]]:
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    return names


def load_text_dataset(
    *,
    dataset_name: Optional[str],
    dataset_config: Optional[str] = None,
    split: str = "train",
    data_files: Optional[List[str]] = None,
    text_column: str = "text",
    streaming: bool = False,
    argument: str = "--text_column",
):
    """The Hub dataset by name, or local files; checks the text column exists (a clear error if not)."""
    from datasets import load_dataset

    if data_files:
        suffixes = {Path(f).suffix.lower() for f in data_files}
        builders = {DATA_FILE_BUILDERS.get(s) for s in suffixes}
        if None in builders or len(builders) != 1:
            raise ValueError(f"data_files={list(data_files)}: use files of one type among {sorted(DATA_FILE_BUILDERS)}.")
        missing = [f for f in data_files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"data_files: no such file(s) {missing}.")
        dataset = load_dataset(builders.pop(), data_files=list(data_files), split="train", streaming=streaming)
        source = f"data_files={list(data_files)}"
    else:
        if not dataset_name:
            raise ValueError("Pass --dataset_name (a Hub dataset) or --data_files (local files).")
        dataset = load_dataset(dataset_name, dataset_config, split=split, streaming=streaming)
        source = f"dataset {dataset_name!r} (split {split!r})"
    columns = _column_names(dataset)
    if columns is None:  # a streamed dataset without declared features: look at one row
        columns = list(next(iter(dataset)).keys())
    if text_column not in columns:
        raise ValueError(
            f"{argument}={text_column!r}: {source} has no column {text_column!r} (its columns are {columns}). Pass the "
            "name of the column that holds the documents."
        )
    return dataset


def pack_texts(texts: List[str], tokenizer, block_size: int, wrap_bos_eos: bool = True) -> Dict[str, List[List[int]]]:
    """Tokenise documents and pack them into blocks of exactly ``block_size`` tokens (MDLM's "wrap").

    Every document ends with EOS; the concatenated stream is cut into pieces of ``block_size - 2`` tokens, each
    wrapped as ``[BOS] piece [EOS]`` (GPT-2: both are ``<|endoftext|>``). Without ``wrap_bos_eos`` the stream
    is cut into pieces of ``block_size``. The incomplete tail of a batch of documents is dropped.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("The tokenizer has no eos_token_id; packing needs a document separator.")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    inner = block_size - 2 if wrap_bos_eos else block_size
    if inner < 1:
        raise ValueError(f"max_length={block_size} is too short to pack (need at least {3 if wrap_bos_eos else 1}).")
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    stream = list(chain.from_iterable(row + [eos] for row in ids))
    usable = len(stream) // inner * inner
    pieces = [stream[i : i + inner] for i in range(0, usable, inner)]
    if wrap_bos_eos:
        pieces = [[bos] + piece + [eos] for piece in pieces]
    return {"input_ids": pieces}


def packed_dataset(dataset, tokenizer, block_size: int, text_column: str, wrap_bos_eos: bool = True,
                   num_proc: Optional[int] = None, batch_size: int = 1000):
    """``dataset.map`` of [`pack_texts`]; the result has one column, ``input_ids``, of ``block_size`` tokens."""
    from datasets import IterableDataset

    remove = _column_names(dataset)
    kwargs = {} if num_proc is None else {"num_proc": num_proc}
    if not isinstance(dataset, IterableDataset):  # a streamed map takes no progress description
        kwargs["desc"] = f"tokenise and pack to {block_size}"
    return dataset.map(
        lambda batch: pack_texts(batch[text_column], tokenizer, block_size, wrap_bos_eos),
        batched=True,
        batch_size=batch_size,
        remove_columns=remove,
        **kwargs,
    )


def main(argv: Optional[List[str]] = None):
    model_args, data_args, training_args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if training_args.process_index == 0 else logging.WARNING)
    set_global_batch_size(training_args)
    if training_args.max_length is None:
        raise ValueError("max_length=None: the text recipe packs documents to a fixed length; pass --max_length (1024).")
    if data_args.holdout_last_n < 0:
        raise ValueError(f"holdout_last_n={data_args.holdout_last_n} must be >= 0.")
    dataset = load_text_dataset(
        dataset_name=data_args.dataset_name,
        dataset_config=data_args.dataset_config,
        split=data_args.dataset_split,
        data_files=data_args.data_files,
        text_column=data_args.text_column,
        streaming=data_args.streaming,
    )
    if data_args.holdout_last_n:
        if data_args.streaming:
            raise ValueError("holdout_last_n needs the dataset's length; pass --holdout_last_n 0 with --streaming.")
        if data_args.holdout_last_n >= len(dataset):
            raise ValueError(f"holdout_last_n={data_args.holdout_last_n} leaves no training document (the split has {len(dataset)}).")
        dataset = dataset.select(range(len(dataset) - data_args.holdout_last_n))
    if data_args.max_train_samples is not None:
        dataset = dataset.take(data_args.max_train_samples) if data_args.streaming else dataset.select(
            range(min(data_args.max_train_samples, len(dataset)))
        )
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.tokenizer_name or model_args.model_name_or_path,
        revision=None if model_args.tokenizer_name else model_args.revision,
        trust_remote_code=model_args.trust_remote_code,
    )
    with training_args.main_process_first(desc="tokenise and pack"):
        train_dataset = packed_dataset(
            dataset, tokenizer, training_args.max_length, data_args.text_column, data_args.wrap_bos_eos,
            num_proc=None if data_args.streaming else data_args.preprocessing_num_workers,
        )
    if not data_args.streaming and len(train_dataset) == 0:
        raise ValueError(f"The training text packs into no block of max_length={training_args.max_length} tokens; add text.")
    model = prism_model_from_arguments(model_args, tokenizer)
    trainer = PrismTrainer(model=model, args=training_args, train_dataset=train_dataset, processing_class=tokenizer)
    result = train_resume_save(trainer, tokenizer)
    return trainer, result


if __name__ == "__main__":
    main()
