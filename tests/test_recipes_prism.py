"""PRISM recipes as the public code runs them: ranking by the head's logits (no float32 saturation), the budget
schedule centred over a block's middle steps, at least one clean token kept, no masked position 0 for shifted
families, and MDLM batches that give each row what it gives alone."""

import pytest
import torch

from prism_hf import PrismForMaskedDiffusion
from prism_hf.data import MaskedDiffusionCollator
from prism_hf.pipeline_prism import PrismPipeline
from prism_hf.scheduling_prism import PrismScheduler
from prism_hf.testing import tiny_dream, tiny_llada, tiny_mdlm
from test_pipeline import quality_atol

MASK = 10
VOCAB = 12


def _pipe(model, **scheduler_kwargs):
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----- ranking by logits ---------------------------------------------------------------------------------------------
def test_prism_ranks_saturated_quality_by_its_logits():
    """A confident head (logits 21 to 37): float32 sigmoid is exactly 1.0 for all of them, so ranking by it ties every
    token; ranking by the logit remasks exactly the lowest ones."""
    length = 40
    g = torch.Generator().manual_seed(0)
    quality = 21.0 + 16.0 * torch.rand(2, length, generator=g)
    assert bool((torch.sigmoid(quality) == 1.0).all()), "the premise: float32 sigmoid saturates here"
    x = torch.randint(0, MASK, (2, length), generator=g)
    x[:, 30:] = MASK  # 30 clean generated tokens, 10 masks
    s = PrismScheduler(unmasking="random", remasking="prism", num_remask=5)
    s.set_timesteps(4)
    out = s.step(torch.randn(2, length, VOCAB, generator=g), 2, x, mask_token_id=MASK, quality_logits=quality,
                 generator=g)
    for row in range(2):
        expected = quality[row, :30].topk(5, largest=False).indices.sort().values
        assert out.remasked[row].nonzero().flatten().tolist() == expected.tolist()


# ----- the budget schedule ---------------------------------------------------------------------------------------------
def _remasks_per_step(scheduler, length, steps, rows=2):
    x = torch.full((rows, length), MASK)
    g = torch.Generator().manual_seed(0)
    scheduler.set_timesteps(steps)
    per_step = []
    for k in scheduler.timesteps.tolist():
        out = scheduler.step(torch.randn(rows, length, VOCAB, generator=g), k, x, mask_token_id=MASK,
                             quality_logits=torch.randn(rows, length, generator=g), generator=g)
        per_step.append(out.num_remasked.tolist())
        x = out.prev_sample
    assert not (x == MASK).any()
    return per_step


def test_budget_schedule_centres_the_llada_code_recipe():
    """LLaDA code recipe: 12 remasks per 64-token block over 32 steps. The official PRISM sampler gives the 12 to the
    steps nearest the block's centre (10 to 21), not to the first middle steps (1 to 12, when the block is nearly
    empty)."""
    s = PrismScheduler(unmasking="confidence", remasking="prism", remask_schedule="budget", remask_budget=12)
    per_step = _remasks_per_step(s, length=64, steps=32)
    expected = [1 if 10 <= k <= 21 else 0 for k in range(32)]
    assert [counts[0] for counts in per_step] == expected
    assert [counts[1] for counts in per_step] == expected


def test_budget_schedule_ties_go_to_the_earlier_step_and_the_base_spreads():
    s = PrismScheduler(unmasking="random", remasking="random", remask_schedule="budget", remask_budget=13)
    per_step = [c[0] for c in _remasks_per_step(s, length=64, steps=32)]
    assert per_step == [1 if 9 <= k <= 21 else 0 for k in range(32)]  # centre 15.5; 9 and 22 tie, 9 goes first
    s = PrismScheduler(unmasking="random", remasking="random", remask_schedule="budget", remask_budget=33)
    per_step = [c[0] for c in _remasks_per_step(s, length=128, steps=32)]
    # 33 over the 30 middle steps: 1 each, the 3 extra at the centre (15, 16, then 14)
    assert per_step == [0] + [2 if k in (14, 15, 16) else 1 for k in range(1, 31)] + [0]


# ----- one clean token always stays ---------------------------------------------------------------------------------
@pytest.mark.parametrize("remasking", ["prism", "random", "confidence"])
def test_count_rules_keep_one_clean_generated_token(remasking):
    x = torch.full((3, 12), MASK)
    x[0, :2] = 1  # 2 clean generated tokens
    x[1, :1] = 1  # 1
    x[2, :6] = 1  # 6
    s = PrismScheduler(unmasking="random", remasking=remasking, num_remask=4)
    s.set_timesteps(6)
    out = s.step(torch.randn(3, 12, VOCAB), 3, x, mask_token_id=MASK, quality_logits=torch.randn(3, 12),
                 token_confidence=torch.rand(3, 12), generator=torch.Generator().manual_seed(0))
    assert out.num_remasked.tolist() == [1, 0, 4]


# ----- shifted families never mask position 0 --------------------------------------------------------------------------
def test_collator_never_masks_position_zero_for_shifted_families():
    examples = [{"input_ids": [3, 4, 5, 6]}, {"input_ids": [7, 8]}]
    dream = PrismForMaskedDiffusion.from_backbone(tiny_dream())
    for model in (dream, tiny_dream()):
        collator = MaskedDiffusionCollator.for_model(model, pad_token_id=0)
        assert collator.never_mask_first
        batch = collator(examples)
        assert not batch["maskable"][:, 0].any()
        assert batch["maskable"][0, 1:].all() and batch["maskable"][1, 1].item() and not batch["maskable"][1, 2:].any()
    for model in (tiny_llada(), PrismForMaskedDiffusion.from_backbone(tiny_llada()), torch.nn.Linear(2, 2)):
        collator = MaskedDiffusionCollator.for_model(model, pad_token_id=0, max_length=16)
        assert not collator.never_mask_first and collator.max_length == 16
        assert collator(examples)["maskable"][:, 0].all()


def test_pipeline_refuses_to_generate_position_zero_of_a_shifted_family():
    pipe = _pipe(tiny_dream(), remasking="none")
    with pytest.raises(ValueError, match="position 0 has no prediction of its own"):
        pipe(input_ids=torch.zeros(1, 0, dtype=torch.long), gen_length=8, num_inference_steps=4)
    dream_mask = PrismPipeline(model=tiny_dream(), scheduler=PrismScheduler()).resolve_mask_token_id()
    grid = torch.tensor([[dream_mask, 5, dream_mask, 7]])
    with pytest.raises(ValueError, match="mask token at the first real position of a row"):
        pipe(input_ids=grid, gen_length=0, num_inference_steps=2)
    out = pipe(input_ids=torch.tensor([[1]]), gen_length=8, num_inference_steps=4)  # one prompt token is enough
    assert out.sequences.shape == (1, 8)


# ----- MDLM: no padding mask ---------------------------------------------------------------------------------------------
def test_mdlm_attends_to_padding():
    """The premise of the next test: MDLM's forward takes no padding mask, so padding changes real positions."""
    model = tiny_mdlm(seed=2)
    mask = model.config.vocab_size - 1
    ids = torch.tensor([[5, 6, mask, mask]])
    padded = torch.tensor([[5, 6, mask, mask, 0, 0]])
    zero = torch.zeros(1)
    alone = model(ids, timesteps=zero, return_dict=True).logits
    with_pad = model(padded, timesteps=zero, return_dict=True).logits[:, :4]
    assert not torch.allclose(alone, with_pad, atol=1e-3)


@pytest.mark.parametrize("with_head", [False, True])
def test_mdlm_padded_batch_equals_each_prompt_alone(with_head):
    backbone = tiny_mdlm(seed=2)
    model = PrismForMaskedDiffusion.from_backbone(backbone).eval() if with_head else backbone
    pipe = _pipe(model, unmasking="confidence", remasking="prism" if with_head else "none", num_remask=1)
    prompts = [torch.tensor([5, 6, 7, 8, 9]), torch.tensor([12, 13]), torch.tensor([14, 15, 16, 17, 18]), torch.tensor([3, 4])]
    kwargs = dict(gen_length=12, block_length=6, num_inference_steps=6, output_type="seq")
    singles = [pipe(input_ids=p[None], **kwargs) for p in prompts]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    attention = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding, as tokenizers pad for generation
        ids[i, width - len(p):] = p
        attention[i, width - len(p):] = 1
    batch = pipe(input_ids=ids, attention_mask=attention, return_history=True, **kwargs)
    for i, single in enumerate(singles):
        assert torch.equal(batch.sequences[i], single.sequences[0]), i
        assert torch.equal(batch.num_remasked[i : i + 1], single.num_remasked)
        if with_head:
            assert torch.allclose(batch.quality[i], single.quality[0], rtol=0, atol=quality_atol(single.quality))
    # two lengths, two batches: forwards add up, and history entries say which rows they hold
    assert batch.nfe == 2 * singles[0].nfe
    assert {tuple(entry["rows"]) for entry in batch.history} == {(0, 2), (1, 3)}


def test_mdlm_infilling_with_padding_is_refused():
    model = tiny_mdlm(seed=2)
    mask = model.config.vocab_size - 1
    pipe = _pipe(model, remasking="none")
    grid = torch.tensor([[5, mask, 7, mask], [0, 5, mask, 8]])
    with pytest.raises(ValueError, match="takes no padding mask"):
        pipe(input_ids=grid, attention_mask=torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]), gen_length=0, num_inference_steps=2)
