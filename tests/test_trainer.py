"""PrismTrainer / MDMTrainer on tiny in-process models: training modes, metrics, bad input, checkpoints, resume."""

import json
import logging
from types import SimpleNamespace

import datasets
import pytest
import torch
from peft import LoraConfig
from transformers import TrainerCallback, TrainingArguments

from prism_hf.modeling_prism import PrismForMaskedDiffusion
from prism_hf.testing import TINY_BUILDERS, tiny_bert, tiny_dream, tiny_llada
from prism_hf.trainer import MDMTrainer, PrismTrainer
from prism_hf.training_args import MaskedDiffusionTrainingArguments, PrismTrainingArguments

SEQ = 12


def _dataset(n=32, prompt=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return datasets.Dataset.from_dict({"input_ids": torch.randint(1, 60, (n, SEQ), generator=g).tolist(), "prompt_length": [prompt] * n})


def _args(tmp_path, cls=PrismTrainingArguments, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
        use_cpu=True, disable_tqdm=True, logging_steps=2, save_strategy="no", seed=0, num_update_tokens=3,
    )
    if cls is not PrismTrainingArguments:
        defaults.pop("num_update_tokens")
    defaults.update(kwargs)
    return cls(**defaults)


def _prism(backbone=None, **kwargs):
    return PrismForMaskedDiffusion.from_backbone(backbone if backbone is not None else tiny_llada(), head_type="mlp", **kwargs)


def _params(model, prefix):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


def _changed(before, model):
    now = dict(model.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, now[n].detach())}


@pytest.fixture
def saved_backbone(tmp_path):
    """A backbone with a path reference, so that LoRA / frozen checkpoints store only what was trained."""
    path = tmp_path / "backbone"
    tiny_llada().save_pretrained(path)
    return str(path)


# ----- training modes ---------------------------------------------------------------------------------
def test_full_training_updates_backbone_and_head_and_logs_metrics(tmp_path):
    model = _prism()
    head0, backbone0 = _params(model, "quality_head."), _params(model, "backbone.")
    trainer = PrismTrainer(model, _args(tmp_path, num_proposals=2), train_dataset=_dataset())
    trainer.train()
    assert _changed(head0, model) and len(_changed(backbone0, model)) > len(backbone0) // 2
    logs = [entry for entry in trainer.state.log_history if "self_correction_loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        for key in ("mdm_loss", "self_correction_loss", "quality_accuracy", "quality_auroc", "quality_positive_rate"):
            assert key in entry
        assert entry["loss"] == pytest.approx(entry["self_correction_loss"] + 0.5 * entry["mdm_loss"], rel=1e-4)
        # 2 steps x 4 rows x n_y=2 copies x k=3 positions (fewer only if a row had < 3 masked positions).
        assert 20 <= entry["quality_num_positions"] <= 48
        assert 0.0 <= entry["quality_accuracy"] <= 1.0


def test_prompt_positions_are_never_masked_or_filled_in_the_trainer(tmp_path):
    model = _prism()
    seen = []
    model.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["input_ids"].clone()), with_kwargs=True)
    trainer = PrismTrainer(model, _args(tmp_path, max_steps=2, num_update_tokens=20), train_dataset=_dataset(prompt=5))
    trainer.train()
    assert len(seen) == 4  # two forwards per step
    for ids in seen:
        assert (ids[:, :5] != model.mask_token_id).all()
    assert (seen[0][:, 5:] == model.mask_token_id).any()


def test_frozen_backbone_trains_only_the_head_and_warns_lambda_ignored(tmp_path, caplog):
    model = _prism()
    backbone0, head0 = _params(model, "backbone."), _params(model, "quality_head.")
    grad_modes = []
    model.register_forward_pre_hook(lambda mod, args: grad_modes.append(torch.is_grad_enabled()))
    with caplog.at_level(logging.WARNING):
        trainer = PrismTrainer(model, _args(tmp_path, backbone_training="frozen", mdm_loss_weight=5.0), train_dataset=_dataset())
    assert "mdm_loss_weight=5.0 is ignored" in caplog.text
    trainer.train()
    assert not _changed(backbone0, model) and _changed(head0, model)
    assert grad_modes[:4] == [False, True, False, True]  # forward on z without gradients, on y with
    entry = next(e for e in trainer.state.log_history if "self_correction_loss" in e)
    assert entry["loss"] == pytest.approx(entry["self_correction_loss"], rel=1e-4)


def test_lora_through_peft_config_trains_adapter_and_head_only(tmp_path, saved_backbone):
    model = _prism(saved_backbone)
    trainer = PrismTrainer(
        model, _args(tmp_path, save_strategy="steps", save_steps=4),
        train_dataset=_dataset(), peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert model.config.backbone_training == "lora"
    backbone0, head0 = _params(model, "backbone."), _params(model, "quality_head.")
    trainer.train()
    changed = _changed(backbone0, model)
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed) and _changed(head0, model)
    ckpt = tmp_path / "out" / "checkpoint-4"
    assert (ckpt / "adapter" / "adapter_config.json").is_file()
    from safetensors.torch import load_file

    assert all(k.startswith("quality_head.") for k in load_file(str(ckpt / "model.safetensors")))
    reloaded = PrismForMaskedDiffusion.from_pretrained(ckpt)
    x = torch.randint(1, 60, (2, SEQ))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).quality_logits, model(x).quality_logits)


def test_separate_learning_rates_for_head_and_backbone(tmp_path):
    model = _prism()
    trainer = PrismTrainer(model, _args(tmp_path, head_learning_rate=3e-3, backbone_learning_rate=1e-4), train_dataset=_dataset())
    optimizer = trainer.create_optimizer()
    head_ids = {id(p) for p in model.quality_head.parameters()}
    for group in optimizer.param_groups:
        is_head = {id(p) in head_ids for p in group["params"]}
        assert len(is_head) == 1
        assert group["lr"] == (3e-3 if is_head.pop() else 1e-4)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(p.requires_grad for p in model.parameters())


def test_mdm_trainer_on_plain_masked_lm_and_on_prism_model(tmp_path):
    bert = tiny_bert()
    before = _params(bert, "")
    args = _args(tmp_path, cls=MaskedDiffusionTrainingArguments, max_steps=2)
    trainer = MDMTrainer(bert, args, train_dataset=_dataset(), mask_token_id=63)
    trainer.train()
    assert _changed(before, bert)
    assert any("mdm_loss" in e for e in trainer.state.log_history)
    with pytest.raises(ValueError, match="mask_token_id=None"):
        MDMTrainer(tiny_bert(), args, train_dataset=_dataset())
    # plain TrainingArguments work too; the mask id comes from the config of a PRISM model / a LLaDA backbone
    for model in (_prism(), tiny_llada()):
        plain = TrainingArguments(output_dir=str(tmp_path / "plain"), max_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
                                  per_device_train_batch_size=4)
        MDMTrainer(model, plain, train_dataset=_dataset()).train()


@pytest.mark.parametrize("family", sorted(TINY_BUILDERS))
def test_prism_trainer_runs_on_every_tiny_family(tmp_path, family):
    backbone = TINY_BUILDERS[family]()
    model = _prism(backbone, mask_token_id=63) if family == "bert" else _prism(backbone)
    head0 = _params(model, "quality_head.")
    trainer = PrismTrainer(model, _args(tmp_path, max_steps=1, logging_steps=1, num_proposals=2), train_dataset=_dataset(8))
    trainer.train()
    assert _changed(head0, model)
    entry = next(e for e in trainer.state.log_history if "self_correction_loss" in e)
    assert all(torch.isfinite(torch.tensor(entry[k])) for k in ("loss", "mdm_loss", "self_correction_loss"))


def test_mdm_trainer_needs_only_logits_and_a_mask_id(tmp_path):
    class TableLM(torch.nn.Module):
        """Not a transformers model: no config, returns an object with .logits only."""

        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(64, 16)
            self.out = torch.nn.Linear(16, 64)

        def forward(self, input_ids, attention_mask=None):
            return SimpleNamespace(logits=self.out(self.embed(input_ids)))

    model = TableLM()
    before = _params(model, "")
    plain = TrainingArguments(output_dir=str(tmp_path / "plain"), max_steps=2, report_to=[], use_cpu=True, disable_tqdm=True,
                              per_device_train_batch_size=4, learning_rate=1e-2)
    MDMTrainer(model, plain, train_dataset=_dataset(), mask_token_id=63).train()
    assert _changed(before, model)


def test_mdm_trainer_aligns_shifted_logits_through_the_registry(tmp_path):
    dream = tiny_dream()
    trainer = MDMTrainer(dream, _args(tmp_path, cls=MaskedDiffusionTrainingArguments), train_dataset=_dataset())
    x = torch.randint(1, 60, (2, SEQ))
    attention = torch.ones_like(x)
    with torch.no_grad():
        ours = trainer._logits(dream, x, attention)
        raw = dream(x).logits
    torch.testing.assert_close(ours[:, 1:], raw[:, :-1])


def test_evaluate_logs_eval_metrics(tmp_path):
    trainer = PrismTrainer(_prism(), _args(tmp_path, max_steps=1), train_dataset=_dataset(), eval_dataset=_dataset(8, seed=1))
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics
    logged = trainer.state.log_history[-1]
    for key in ("eval_mdm_loss", "eval_self_correction_loss", "eval_quality_accuracy"):
        assert key in logged


# ----- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [("num_update_tokens", 0), ("num_proposals", 0), ("mdm_loss_weight", -0.5), ("update_selection", "lowest"),
     ("backbone_training", "half"), ("mask_eps", 1.0), ("proposal_temperature", -1.0)],
)
def test_bad_training_arguments(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        _args(tmp_path, **{field: value})


def test_dataset_without_input_ids(tmp_path):
    ds = datasets.Dataset.from_dict({"text": ["a b c", "d e"]})
    with pytest.raises(ValueError, match="train_dataset has no `input_ids` column"):
        PrismTrainer(_prism(), _args(tmp_path), train_dataset=ds)


def test_sequences_longer_than_the_model_maximum(tmp_path):
    long = datasets.Dataset.from_dict({"input_ids": [[5] * 300] * 4})  # tiny_llada accepts 256 positions
    trainer = PrismTrainer(_prism(), _args(tmp_path, max_steps=1), train_dataset=long)
    with pytest.raises(ValueError, match="300 tokens, more than max_length=256"):
        trainer.train()
    with pytest.raises(ValueError, match="max_length=512 is larger than the model's maximum sequence length 256"):
        PrismTrainer(_prism(), _args(tmp_path, max_length=512), train_dataset=long)


def test_batch_with_nothing_maskable_is_skipped_without_nan(tmp_path, caplog):
    model = _prism()
    before = _params(model, "")
    ds = datasets.Dataset.from_dict({"input_ids": [[5] * SEQ] * 8, "prompt_length": [SEQ] * 8})
    trainer = PrismTrainer(model, _args(tmp_path, max_steps=2, logging_steps=1, weight_decay=0.1), train_dataset=ds)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert "Skipping a batch" in caplog.text and trainer._skipped_batches == 2
    assert not _changed(before, model)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses and all(loss == 0.0 for loss in losses)


def test_streaming_dataset_trains_and_empty_batches_stay_finite(tmp_path):
    ds = datasets.Dataset.from_dict({"input_ids": [[5] * SEQ] * 8, "prompt_length": [SEQ] * 4 + [2] * 4}).to_iterable_dataset()
    model = _prism()
    trainer = PrismTrainer(model, _args(tmp_path, max_steps=2, logging_steps=1), train_dataset=ds)
    assert trainer.data_collator.return_has_maskable is False  # accelerate can only concatenate tensors
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[0] == 0.0 and losses[1] > 0.0  # an all-prompt batch has an exactly zero loss, then real training


def test_prism_trainer_rejects_a_plain_backbone(tmp_path):
    with pytest.raises(TypeError, match="PrismForMaskedDiffusion.from_backbone"):
        PrismTrainer(tiny_llada(), _args(tmp_path), train_dataset=_dataset())
    with pytest.raises(ValueError, match="backbone_training='lora' needs peft_config"):
        PrismTrainer(_prism(), _args(tmp_path, backbone_training="lora"), train_dataset=_dataset())


# ----- checkpoints and resume -------------------------------------------------------------------------
class _StopAt(TrainerCallback):
    """Interrupts training after a given step (its checkpoint is written first), like a killed job."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _run(tmp_path, name, mode, backbone_path, max_steps=6, resume=None, stop_at=None):
    torch.manual_seed(0)  # the same fresh head in every run
    model = _prism(backbone_path)
    kwargs = {}
    if mode == "lora":
        kwargs["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    args = _args(tmp_path, output_dir=str(tmp_path / name), max_steps=max_steps, save_strategy="steps", save_steps=3,
                 backbone_training=None if mode == "lora" else mode, logging_steps=1, num_proposals=2)
    callbacks = [_StopAt(stop_at)] if stop_at else None
    trainer = PrismTrainer(model, args, train_dataset=_dataset(48), callbacks=callbacks, **kwargs)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, model


@pytest.mark.parametrize("mode", ["full", "lora", "frozen"])
def test_resume_from_checkpoint_continues_where_it_stopped(tmp_path, saved_backbone, mode):
    # Reference: 6 uninterrupted steps.
    _, reference = _run(tmp_path, "straight", mode, saved_backbone)
    # Interrupted: the same run stopped after the step-3 checkpoint, then resumed in a fresh trainer and model
    # (a fresh model proves the weights come from disk).
    _, stopped = _run(tmp_path, "interrupted", mode, saved_backbone, stop_at=3)
    assert not all(torch.equal(p, dict(reference.named_parameters())[n]) for n, p in stopped.named_parameters())
    ckpt = tmp_path / "interrupted" / "checkpoint-3"
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved["backbone_training"] == mode
    if mode != "full":  # the backbone has a path reference: only what was trained is stored
        from safetensors.torch import load_file

        assert all(k.startswith("quality_head.") for k in load_file(str(ckpt / "model.safetensors")))
        assert (ckpt / "adapter").is_dir() == (mode == "lora")
    resumed, model = _run(tmp_path, "interrupted", mode, saved_backbone, resume=str(ckpt))
    assert resumed.state.global_step == 6
    steps = [e["step"] for e in resumed.state.log_history if "loss" in e and "train_runtime" not in e]
    assert steps[:3] == [1, 2, 3] and steps[3:] == [4, 5, 6]  # history of the first part kept, then steps 4-6
    # Optimizer state came back: Adam's step count continues from 3.
    state = resumed.optimizer.state_dict()["state"]
    assert {int(s["step"]) for s in state.values()} == {6}
    expected = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, expected[name], rtol=1e-5, atol=1e-6, msg=f"{mode}: {name} differs after resume")


def test_resume_rejects_a_checkpoint_of_another_mode(tmp_path, saved_backbone):
    _run(tmp_path, "frozen", "frozen", saved_backbone, stop_at=3)
    with pytest.raises(ValueError, match="backbone_training='frozen' but the model is set up for 'full'"):
        _run(tmp_path, "frozen", "full", saved_backbone, resume=str(tmp_path / "frozen" / "checkpoint-3"))


def test_frozen_backbone_runs_without_dropout(tmp_path):
    from prism_hf import PrismForMaskedDiffusion, PrismTrainer, PrismTrainingArguments
    from prism_hf.testing import tiny_bert
    from datasets import Dataset

    backbone = tiny_bert()
    backbone.config.hidden_dropout_prob = 0.5
    for module in backbone.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    model = PrismForMaskedDiffusion.from_backbone(backbone, mask_token_id=63, head_type="linear", backbone_training="frozen")
    data = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 9, 10]] * 8})
    args = PrismTrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to=[],
                                  num_update_tokens=2, use_cpu=True, save_strategy="no")
    trainer = PrismTrainer(model=model, args=args, train_dataset=data)
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda m, a: seen.append(m.training))
    trainer.train()
    handle.remove()
    assert seen and not any(seen), "the frozen backbone must run in eval mode"
    assert model.quality_head.training


@pytest.mark.parametrize("skip", [True, False])
def test_forward_on_y_skips_the_vocabulary_projection(tmp_path, skip):
    from datasets import Dataset

    from prism_hf import PrismTrainer, PrismTrainingArguments

    model = PrismForMaskedDiffusion.from_backbone(tiny_llada(), head_type="linear")
    data = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 9, 10]] * 4})
    args = PrismTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                                  num_update_tokens=2, use_cpu=True, save_strategy="no", skip_unused_logits=skip)
    trainer = PrismTrainer(model=model, args=args, train_dataset=data)
    assert trainer.args.ddp_find_unused_parameters is False
    calls = []
    handle = model.backbone.model.transformer.ff_out.register_forward_hook(lambda m, a, o: calls.append(1))
    trainer.train()
    handle.remove()
    assert len(calls) == (2 if skip else 4), "one vocabulary projection per step (the forward on z) when skipping"
