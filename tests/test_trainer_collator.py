"""MaskedDiffusionCollator: padding, attention mask, which positions may be masked."""

import logging

import datasets
import pytest

from prism_hf.data import MaskedDiffusionCollator

PAD = 0


def test_unconditional_rows_everything_but_padding_is_maskable():
    batch = MaskedDiffusionCollator(pad_token_id=PAD)([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["maskable"].tolist() == [[True, True, True], [True, False, False]]
    assert batch["has_maskable"] is True


def test_prompt_length_labels_and_explicit_maskable():
    rows = [
        {"input_ids": [1, 2, 3, 4], "prompt_length": 2},
        {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, -100, 4, 5]},
        {"input_ids": [1, 2, 3], "maskable": [1, 0, 1]},
    ]
    batch = MaskedDiffusionCollator(pad_token_id=PAD)(rows)
    assert batch["maskable"].tolist() == [
        [False, False, True, True, False],
        [False, False, False, True, True],
        [True, False, True, False, False],
    ]
    assert "labels" not in batch and "prompt_length" not in batch


def test_works_on_a_datasets_dataset_with_tensor_format():
    ds = datasets.Dataset.from_dict({"input_ids": [[3, 4, 5], [6, 7]], "prompt_length": [1, 0]})
    ds.set_format("torch")
    batch = MaskedDiffusionCollator(pad_token_id=PAD, pad_to_multiple_of=4)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 4)
    assert batch["maskable"].tolist() == [[False, True, True, False], [True, True, False, False]]


def test_mask_padding_llada_sft_convention():
    batch = MaskedDiffusionCollator(pad_token_id=2, mask_padding=True)([{"input_ids": [5, 6, 7], "prompt_length": 1}, {"input_ids": [5, 6]}])
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert batch["maskable"].tolist() == [[False, True, True], [True, True, True]]


def test_missing_input_ids_is_a_clear_error():
    with pytest.raises(ValueError, match="no `input_ids`.*Tokenize"):
        MaskedDiffusionCollator(pad_token_id=PAD)([{"text": "hello"}])


def test_too_long_raises_unless_truncation():
    rows = [{"input_ids": list(range(1, 11))}]
    with pytest.raises(ValueError, match="10 tokens, more than max_length=8"):
        MaskedDiffusionCollator(pad_token_id=PAD, max_length=8)(rows)
    batch = MaskedDiffusionCollator(pad_token_id=PAD, max_length=8, truncation=True)(rows)
    assert batch["input_ids"].shape == (1, 8)


def test_bad_prompt_length_and_pad_id():
    with pytest.raises(ValueError, match="prompt_length=5"):
        MaskedDiffusionCollator(pad_token_id=PAD)([{"input_ids": [1, 2], "prompt_length": 5}])
    with pytest.raises(ValueError, match="pad_token_id=-1"):
        MaskedDiffusionCollator(pad_token_id=-1)


def test_nothing_maskable_batch_is_flagged_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        batch = MaskedDiffusionCollator(pad_token_id=PAD)([{"input_ids": [1, 2], "prompt_length": 2}])
    assert batch["has_maskable"] is False
    assert not batch["maskable"].any()
    assert "no position of this batch" in caplog.text


def test_has_maskable_flag_can_be_left_out():
    batch = MaskedDiffusionCollator(pad_token_id=PAD, return_has_maskable=False)([{"input_ids": [1, 2]}])
    assert set(batch) == {"input_ids", "attention_mask", "maskable"}


def test_for_model_reads_the_family_registry():
    from prism_hf import PrismForMaskedDiffusion
    from prism_hf.testing import tiny_dream, tiny_llada

    assert MaskedDiffusionCollator.for_model(tiny_dream(), pad_token_id=0).never_mask_first
    assert MaskedDiffusionCollator.for_model(PrismForMaskedDiffusion.from_backbone(tiny_dream()), pad_token_id=0).never_mask_first
    assert not MaskedDiffusionCollator.for_model(tiny_llada(), pad_token_id=0).never_mask_first
    batch = MaskedDiffusionCollator(pad_token_id=0, never_mask_first=True)([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    assert batch["maskable"].tolist() == [[False, True, True], [False, False, False]]
    assert batch["has_maskable"]


def test_the_trainers_default_collator_never_masks_position_zero_for_dream(tmp_path):
    from prism_hf import PrismForMaskedDiffusion
    from prism_hf.testing import tiny_dream
    from prism_hf.trainer import PrismTrainer
    from prism_hf.training_args import PrismTrainingArguments

    model = PrismForMaskedDiffusion.from_backbone(tiny_dream())
    args = PrismTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], max_steps=1)
    trainer = PrismTrainer(model=model, args=args, train_dataset=[{"input_ids": [1, 2, 3, 4]}])
    assert trainer.data_collator.never_mask_first
