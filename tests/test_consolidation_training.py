"""Issue 15, training: the trainers read backbone facts from the family registry (a raw MDLM trains with MDMTrainer),
one name per concept in the losses (``mask_eps``, ``update_selection``; the old names warn), one token sampler."""

import warnings

import datasets
import pytest
import torch
from transformers import TrainingArguments

from prism_hf.modeling.families import aligned_logits, mask_token_id_for, max_length_of
from prism_hf.testing import tiny_dream, tiny_mdlm
from prism_hf.training.losses import forward_mask, prism_step, sample_proposals, select_update_positions
from prism_hf.training.trainer import MDMTrainer, model_max_length
from prism_hf.training.training_args import MaskedDiffusionTrainingArguments
from prism_hf.utils.token_sampling import sample_tokens

SEQ = 12


def _dataset(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return datasets.Dataset.from_dict({"input_ids": torch.randint(1, 60, (n, SEQ), generator=g).tolist()})


def _plain_args(tmp_path, **kwargs):
    return TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, report_to=[],
                             use_cpu=True, disable_tqdm=True, learning_rate=1e-2, **kwargs)


class _Tokenizer:
    mask_token_id = 3
    pad_token_id = 0


# ----- the trainer reads the registry -------------------------------------------------------------------------------
def test_mdm_trainer_trains_a_raw_mdlm_backbone(tmp_path):
    """MDLM's config records no mask id; the family rule (the last vocabulary id) gives it, as from_backbone does."""
    mdlm = tiny_mdlm(model_length=32)
    before = {n: p.detach().clone() for n, p in mdlm.named_parameters()}
    trainer = MDMTrainer(mdlm, _plain_args(tmp_path), train_dataset=_dataset())
    assert trainer.mask_token_id == mask_token_id_for(mdlm) == mdlm.config.vocab_size - 1
    assert trainer.max_length == max_length_of(mdlm) == model_max_length(mdlm) == 32
    trainer.train()
    changed = [n for n, p in mdlm.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)


def test_mdm_trainer_mask_id_precedence_is_the_registrys(tmp_path):
    mdlm = tiny_mdlm()
    # the tokenizer comes before the family rule (0.1.0's order); an explicit id before both
    assert MDMTrainer(mdlm, _plain_args(tmp_path), train_dataset=_dataset(), processing_class=_Tokenizer()).mask_token_id == 3
    assert MDMTrainer(mdlm, _plain_args(tmp_path), train_dataset=_dataset()).mask_token_id == 64
    assert MDMTrainer(mdlm, _plain_args(tmp_path), train_dataset=_dataset(), mask_token_id=7).mask_token_id == 7
    with pytest.raises(ValueError, match=r"mask_token_id=65 \(from argument mask_token_id\) is outside the vocabulary"):
        MDMTrainer(mdlm, _plain_args(tmp_path), train_dataset=_dataset(), mask_token_id=65)


def test_mdm_trainer_logits_are_the_registrys_aligned_logits(tmp_path):
    dream = tiny_dream()
    trainer = MDMTrainer(dream, MaskedDiffusionTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True),
                         train_dataset=_dataset())
    x = torch.randint(1, 60, (2, SEQ))
    with torch.no_grad():
        assert torch.equal(trainer._logits(dream, x, torch.ones_like(x)), aligned_logits(dream, x, torch.ones_like(x)))


# ----- one name per concept in the losses --------------------------------------------------------------------------
def test_forward_mask_mask_eps_and_its_deprecated_name():
    x = torch.randint(0, 9, (64, 16), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(x, dtype=torch.bool)
    new = forward_mask(x, maskable, 9, mask_eps=0.6, generator=torch.Generator().manual_seed(1))
    assert new[2].min() >= 0.6
    with pytest.warns(FutureWarning, match=r"forward_mask: `eps` is deprecated; use `mask_eps`.*0\.3\.0"):
        old = forward_mask(x, maskable, 9, eps=0.6, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    with pytest.raises(TypeError, match=r"forward_mask: pass `mask_eps` only; `eps` is its deprecated name"):
        forward_mask(x, maskable, 9, eps=0.6, mask_eps=0.6)
    with pytest.raises(TypeError, match=r"forward_mask\(\) got an unexpected keyword argument 'epsilon'"):
        forward_mask(x, maskable, 9, epsilon=0.6)
    with pytest.raises(ValueError, match=r"mask_eps=1\.0 is not valid; it must satisfy 0 <= mask_eps < 1"):
        forward_mask(x, maskable, 9, mask_eps=1.0)


def test_select_update_positions_update_selection_and_its_deprecated_name():
    masked = torch.ones(2, 6, dtype=torch.bool)
    confidence = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.2, 0.0], [0.5, 0.4, 0.3, 0.2, 0.1, 0.6]])
    new = select_update_positions(masked, 2, update_selection="confidence", confidence=confidence)
    assert new.tolist() == [[False, True, False, True, False, False], [True, False, False, False, False, True]]
    assert torch.equal(select_update_positions(masked, 2, "confidence", confidence), new)  # still the third argument
    with pytest.warns(FutureWarning, match=r"select_update_positions: `selection` is deprecated; use `update_selection`"):
        old = select_update_positions(masked, 2, selection="confidence", confidence=confidence)
    assert torch.equal(old, new)
    with pytest.raises(TypeError, match=r"pass `update_selection` only"):
        select_update_positions(masked, 2, update_selection="random", selection="random")
    with pytest.raises(ValueError, match=r"update_selection='best' is not valid"):
        select_update_positions(masked, 2, update_selection="best")


class _TableModel(torch.nn.Module):
    """Fixed posterior logits per position, zero quality logits."""

    def __init__(self, logits):
        super().__init__()
        self.table = logits

    def forward(self, ids, attention_mask=None, **kwargs):
        batch = ids.shape[0]
        return type("Out", (), {"logits": self.table.expand(batch, -1, -1), "quality_logits": torch.zeros(ids.shape)})()


def test_prism_step_mask_eps_and_its_deprecated_name():
    model = _TableModel(torch.randn(1, SEQ, 10, generator=torch.Generator().manual_seed(0)))
    x = torch.randint(0, 9, (4, SEQ), generator=torch.Generator().manual_seed(1))
    maskable = torch.ones_like(x, dtype=torch.bool)
    new = prism_step(model, x, maskable, 9, num_update_tokens=3, mask_eps=0.7, generator=torch.Generator().manual_seed(2))
    with pytest.warns(FutureWarning, match=r"prism_step: `eps` is deprecated; use `mask_eps`"):
        old = prism_step(model, x, maskable, 9, num_update_tokens=3, eps=0.7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(new.t, old.t) and torch.equal(new.update_ids, old.update_ids) and torch.equal(new.loss, old.loss)
    assert new.t.min() >= 0.7
    with pytest.raises(TypeError, match=r"prism_step: pass `mask_eps` only"):
        prism_step(model, x, maskable, 9, eps=0.7, mask_eps=0.7)
    with pytest.raises(TypeError, match=r"prism_step\(\) got an unexpected keyword argument 'selection'"):
        prism_step(model, x, maskable, 9, selection="random")


def test_the_current_names_do_not_warn():
    model = _TableModel(torch.randn(1, SEQ, 10, generator=torch.Generator().manual_seed(0)))
    x = torch.randint(0, 9, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward_mask(x, torch.ones_like(x, dtype=torch.bool), 9, mask_eps=0.1)
        select_update_positions(torch.ones(2, 4, dtype=torch.bool), 1, update_selection="random")
        prism_step(model, x, torch.ones_like(x, dtype=torch.bool), 9, mask_eps=0.1, update_selection="confidence")


# ----- one token sampler -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature, top_p, num_samples", [(1.0, None, 1), (0.7, 0.9, 3), (0.0, None, 2), (1.3, 0.5, 1)])
def test_proposals_are_the_shared_samplers_draws(temperature, top_p, num_samples):
    """sample_proposals is the package's token sampler with the PRISM recipe's settings (the mask token suppressed,
    MDLM's nucleus, the model's untempered confidence): the same generator gives the same tokens."""
    logits = torch.randn(3, 9, 80, generator=torch.Generator().manual_seed(5)) * 3
    ids, confidence = sample_proposals(logits, temperature, torch.Generator().manual_seed(6), num_samples=num_samples,
                                       suppress_token_id=79, top_p=top_p)
    draw = sample_tokens(logits, temperature=temperature, top_p=top_p, top_p_mode="mdlm", suppress_token_id=79,
                         num_samples=None if num_samples == 1 else num_samples, generator=torch.Generator().manual_seed(6))
    assert torch.equal(ids, draw.tokens) and torch.equal(confidence, draw.token_prob)
    assert not (ids == 79).any()
    expected_shape = (3, 9) if num_samples == 1 else (num_samples, 3, 9)
    assert ids.shape == confidence.shape == expected_shape
    # the confidence is the untempered posterior's, renormalised without the suppressed token
    posterior = logits[..., :79].softmax(-1)
    gathered = posterior.gather(-1, (ids if num_samples == 1 else ids[0]).unsqueeze(-1)).squeeze(-1)
    # float32 softmax over 80 logits: a few float32 epsilons per reduction
    torch.testing.assert_close(confidence if num_samples == 1 else confidence[0], gathered,
                               rtol=8 * torch.finfo(torch.float32).eps * 80 ** 0.5, atol=0)


def test_collator_reads_the_family_through_every_wrapper():
    from peft import LoraConfig, get_peft_model

    from prism_hf import PrismForMaskedDiffusion
    from prism_hf.training.collator import MaskedDiffusionCollator

    lora_backbone = get_peft_model(tiny_dream(), LoraConfig(r=2, target_modules=["q_proj"]))
    lora_prism = PrismForMaskedDiffusion.from_backbone(tiny_dream()).enable_lora(LoraConfig(r=2, target_modules=["q_proj"]))
    for model in (lora_backbone, lora_prism):
        assert MaskedDiffusionCollator.for_model(model, pad_token_id=0).never_mask_first
    assert not MaskedDiffusionCollator.for_model(tiny_mdlm(), pad_token_id=0).never_mask_first
    assert not MaskedDiffusionCollator.for_model(torch.nn.Linear(2, 2), pad_token_id=0).never_mask_first  # unregistered
