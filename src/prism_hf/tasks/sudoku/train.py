"""The two training stages of the Sudoku demo: MDM pretraining (`MDMTrainer`) and PRISM fine-tuning (`PrismTrainer`).

Both stages are resumable: a finished stage leaves its model folder with a ``sudoku_recipe.json`` and is
skipped on a rerun; an interrupted stage resumes from the Trainer checkpoint in ``<output_dir>/work/``.
No stage ever looks at evaluation puzzles: training data are solved grids from ``recipe.train_seed``
and the final weights are kept (no checkpoint selection).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import List, Optional, Sequence

import torch
from transformers.utils import logging

from ...modeling.modeling_prism import PrismForMaskedDiffusion
from .data import build_training_dataset
from .grids import SudokuInputError
from .heldout import GridSource, finetuning_source, load_training_sources, pretraining_source, save_training_sources
from .modeling import SudokuMDMConfig, SudokuMDMForMaskedLM
from .recipes import RECIPE_FILENAME, SudokuRecipe

logger = logging.get_logger(__name__)

__all__ = ["build_backbone", "pretrain", "finetune", "stage_done", "load_backbone", "load_prism", "checkpoint_training_sources"]


def stage_done(directory: str) -> bool:
    """Whether a stage finished: its folder holds the weights and the recipe (written last)."""
    return os.path.isfile(os.path.join(directory, RECIPE_FILENAME)) and os.path.isfile(os.path.join(directory, "config.json"))


def build_backbone(recipe: SudokuRecipe) -> SudokuMDMForMaskedLM:
    """A freshly initialised backbone for the recipe's grid (seeded with ``recipe.train_seed``)."""
    spec = recipe.spec
    torch.manual_seed(recipe.train_seed)
    config = SudokuMDMConfig(
        box_rows=spec.box_rows, box_cols=spec.box_cols, hidden_size=recipe.hidden_size,
        num_hidden_layers=recipe.num_hidden_layers, num_attention_heads=recipe.num_attention_heads,
        intermediate_size=recipe.intermediate_size,
    )
    return SudokuMDMForMaskedLM(config)


def _check_size(model_spec, recipe: SudokuRecipe, what: str, path: str) -> None:
    if (model_spec.box_rows, model_spec.box_cols) != (recipe.spec.box_rows, recipe.spec.box_cols):
        raise SudokuInputError(
            f"{what} {path!r} is a {model_spec.name} Sudoku model (boxes {model_spec.box_rows}x{model_spec.box_cols}), but "
            f"the run is for {recipe.spec.name} grids (boxes {recipe.spec.box_rows}x{recipe.spec.box_cols}). Use a "
            "checkpoint trained for this grid size, or pass --size to match the checkpoint."
        )


def load_backbone(path: str) -> SudokuMDMForMaskedLM:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SudokuInputError(f"backbone={path!r} holds no model (no config.json); run `prism-hf sudoku pretrain` first.")
    return SudokuMDMForMaskedLM.from_pretrained(path)


def load_prism(path: str) -> PrismForMaskedDiffusion:
    """Load a PRISM Sudoku checkpoint (the backbone's model type is registered by importing this package)."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise SudokuInputError(f"checkpoint={path!r} holds no model (no config.json); run `prism-hf sudoku finetune` first.")
    model = PrismForMaskedDiffusion.from_pretrained(path)
    if not isinstance(model.backbone, SudokuMDMForMaskedLM):
        raise SudokuInputError(
            f"checkpoint={path!r} wraps a {type(model.backbone).__name__}, not a Sudoku backbone ({SudokuMDMForMaskedLM.__name__})."
        )
    return model


def _training_kwargs(recipe: SudokuRecipe, work_dir: str, steps: int, batch_size: int, lr: float,
                     warmup: int, show_progress: bool) -> dict:
    return dict(
        output_dir=work_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=min(warmup, max(steps - 1, 0)),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, min(100, steps // 10)),
        save_strategy="steps",
        save_steps=max(25, steps // 5),
        save_total_limit=1,
        report_to=[],
        disable_tqdm=not show_progress,
        seed=recipe.train_seed,
        data_seed=recipe.train_seed,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
    )


def _last_checkpoint(work_dir: str) -> Optional[str]:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(work_dir) if os.path.isdir(work_dir) else None


def checkpoint_training_sources(directory: str, recipe: Optional[SudokuRecipe] = None) -> List[GridSource]:
    """The training grids behind the weights in ``directory`` (a backbone or a PRISM checkpoint).

    Read from its ``training_data.json``; for a folder written before that file existed, derived from its own
    ``sudoku_recipe.json`` (else from ``recipe``): pretraining grids for a backbone, pretraining and fine-tuning
    grids for a PRISM checkpoint.
    """
    sources = load_training_sources(directory)
    if sources is not None:
        return sources
    if os.path.isfile(os.path.join(directory, RECIPE_FILENAME)):
        recipe = SudokuRecipe.load(directory)
    elif recipe is None:
        raise SudokuInputError(
            f"{directory!r} records no training data ({RECIPE_FILENAME} and training_data.json are missing), so held-out "
            "puzzles cannot be kept apart from its training grids; pass the recipe it was trained with."
        )
    with open(os.path.join(directory, "config.json")) as f:
        is_backbone = json.load(f).get("model_type") == SudokuMDMConfig.model_type
    return [pretraining_source(recipe)] + ([] if is_backbone else [finetuning_source(recipe)])


def _train_and_save(trainer, recipe: SudokuRecipe, work_dir: str, output_dir: str, sources: Sequence[GridSource]) -> str:
    """Train (resuming from the last checkpoint in ``work_dir``), save the model, the training-grid sources and
    then the recipe (which marks the stage finished), and drop the Trainer checkpoints."""
    trainer.train(resume_from_checkpoint=_last_checkpoint(work_dir))
    trainer.model.save_pretrained(output_dir)
    save_training_sources(output_dir, sources)
    recipe.save(output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return output_dir


def pretrain(recipe: SudokuRecipe, output_dir: str, show_progress: bool = True) -> str:
    """Pretrain the backbone with the MDM loss; returns the folder of the saved backbone.

    Skipped when ``output_dir`` already holds a finished backbone; resumed from ``output_dir/work`` when a
    previous run was interrupted.
    """
    from ...training.trainer import MDMTrainer
    from ...training.training_args import MaskedDiffusionTrainingArguments

    if stage_done(output_dir):
        _check_size(load_backbone(output_dir).config.sudoku_spec, recipe, "backbone", output_dir)
        logger.warning("pretrain: %s is finished; skipping (delete it to retrain).", output_dir)
        return output_dir
    model = build_backbone(recipe)
    source = pretraining_source(recipe)
    dataset = build_training_dataset(source.num_grids, recipe.spec, seed=source.seed, pool_size=source.pool_size)
    work_dir = os.path.join(output_dir, "work")
    args = MaskedDiffusionTrainingArguments(
        **_training_kwargs(recipe, work_dir, recipe.pretrain_steps, recipe.pretrain_batch_size,
                           recipe.pretrain_learning_rate, recipe.pretrain_warmup_steps, show_progress)
    )
    return _train_and_save(MDMTrainer(model=model, args=args, train_dataset=dataset), recipe, work_dir, output_dir, [source])


def finetune(recipe: SudokuRecipe, backbone_dir: str, output_dir: str, show_progress: bool = True) -> str:
    """PRISM fine-tuning of a pretrained backbone (full backbone, ``recipe.head_type`` head, k and lambda of the
    recipe); returns the folder of the saved `PrismForMaskedDiffusion`."""
    from ...training.trainer import PrismTrainer
    from ...training.training_args import PrismTrainingArguments

    if stage_done(output_dir):
        _check_size(load_prism(output_dir).backbone.config.sudoku_spec, recipe, "checkpoint", output_dir)
        logger.warning("finetune: %s is finished; skipping (delete it to retrain).", output_dir)
        return output_dir
    backbone = load_backbone(backbone_dir)
    _check_size(backbone.config.sudoku_spec, recipe, "backbone", backbone_dir)
    torch.manual_seed(recipe.train_seed + 1)
    model = PrismForMaskedDiffusion.from_backbone(backbone, head_type=recipe.head_type)
    # Training grids for this stage come from another stream of the training seed (never the eval seed).
    source = finetuning_source(recipe)
    dataset = build_training_dataset(source.num_grids, recipe.spec, seed=source.seed, pool_size=source.pool_size)
    # The checkpoint records the grids of both stages (the backbone's as it recorded them), so that held-out
    # puzzles can be kept apart from all of them.
    sources = checkpoint_training_sources(backbone_dir, recipe) + [source]
    work_dir = os.path.join(output_dir, "work")
    args = PrismTrainingArguments(
        **_training_kwargs(recipe, work_dir, recipe.finetune_steps, recipe.finetune_batch_size,
                           recipe.finetune_learning_rate, min(recipe.pretrain_warmup_steps, recipe.finetune_steps // 10),
                           show_progress),
        num_update_tokens=recipe.num_update_tokens,
        num_proposals=recipe.num_proposals,
        mdm_loss_weight=recipe.mdm_loss_weight,
        update_selection="random",
        proposal_temperature=recipe.proposal_temperature,
        backbone_training="full",
    )
    return _train_and_save(PrismTrainer(model=model, args=args, train_dataset=dataset), recipe, work_dir, output_dir, sources)
