"""Fast decoding in PrismPipeline: key/value caching of block decoding (kv_cache), Fast-dLLM's confidence-threshold
parallel decoding (confidence_threshold) and PRISM's quality-guided decoding (quality_threshold).

What is exact and what is approximate:
* a cached run equals the uncached one token for token when the cached keys cannot be stale: a one-layer model (its
  keys depend on each position's own token, and outside the window no token changes during a block);
* with deeper models the cache is Fast-dLLM's approximation (tested at the model level in test_block_cache.py).
Invariants of every mode: no mask is left, the prompt (or the given tokens) is untouched, NFE counts model calls.
"""

import pytest
import torch

from prism_hf import PrismForMaskedDiffusion
from prism_hf.pipeline_prism import PrismPipeline
from prism_hf.scheduling_prism import PrismScheduler
from prism_hf.testing import tiny_bert, tiny_dream, tiny_llada, tiny_mdlm

MASK = 63


def _backbone(family, layers=2, sharpen=1.0, seed=1):
    model = tiny_llada(n_layers=layers, seed=seed) if family == "llada" else tiny_dream(num_layers=layers, seed=seed)
    if sharpen != 1.0:  # confident logits, as a trained model has (threshold decoding needs confident tokens)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(sharpen)
    return model.eval()


def _prism(family, layers=2, sharpen=1.0, seed=1):
    model = PrismForMaskedDiffusion.from_backbone(_backbone(family, layers, sharpen, seed)).eval()
    with torch.no_grad():
        for p in model.quality_head.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))
    return model


def _pipe(model, **scheduler_kwargs):
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


PROMPTS = [torch.tensor([5, 6, 7, 8, 9, 10]), torch.tensor([12, 13]), torch.tensor([14, 15, 16, 17])]


def _padded(prompts=PROMPTS):
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    return ids, mask


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
@pytest.mark.parametrize("remasking", ["none", "prism"])
def test_cached_decoding_of_a_one_layer_model_equals_uncached(family, kv_cache, remasking):
    model = _prism(family, layers=1)
    ids, mask = _padded()
    kwargs = dict(input_ids=ids, attention_mask=mask, gen_length=16, block_length=8, num_inference_steps=8)
    base = _pipe(model, remasking=remasking, num_remask=1)(**kwargs)
    cached = _pipe(model, remasking=remasking, num_remask=1, kv_cache=kv_cache)(**kwargs)
    assert torch.equal(cached.sequences, base.sequences)
    assert torch.equal(cached.num_remasked, base.num_remasked)
    assert cached.nfe == base.nfe == 8 + 1
    # Cheaper forwards: after each block's first (full) forward only the window runs.
    assert cached.tokens_processed < base.tokens_processed
    width = 8 if kv_cache == "dual" else None
    if width is not None:
        full = ids.shape[1] + 16
        shift = int(family == "dream")
        assert cached.tokens_processed == 3 * (2 * full + 2 * 3 * (width + shift) + full)  # 2 fills, 6 windows, final


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
def test_cached_decoding_of_a_deeper_model_keeps_the_invariants(family, kv_cache):
    model = _prism(family, layers=2)
    ids, mask = _padded()
    out = _pipe(model, remasking="prism", num_remask=1, kv_cache=kv_cache)(
        input_ids=ids, attention_mask=mask, gen_length=16, block_length=8, num_inference_steps=8, return_history=True
    )
    assert not (out.sequences == MASK).any() and out.nfe == 9
    first = out.history[0]["sample"]  # the prompt is untouched: every row's prompt sits at its start
    for row, prompt in enumerate(PROMPTS):
        assert torch.equal(first[row, : len(prompt)], prompt)
        assert torch.equal(out.history[-1]["sample"][row, : len(prompt)], prompt)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_dual_cache_padded_batch_equals_each_prompt_alone(family):
    """Rows of different prompt lengths decode their blocks at different columns; each gets what it gets alone."""
    model = _prism(family, layers=2)
    pipe = _pipe(model, remasking="prism", num_remask=1, kv_cache="dual")
    kwargs = dict(gen_length=16, block_length=8, num_inference_steps=8)
    ids, mask = _padded()
    batch = pipe(input_ids=ids, attention_mask=mask, **kwargs)
    for row, prompt in enumerate(PROMPTS):
        alone = pipe(input_ids=prompt[None], **kwargs)
        assert torch.equal(batch.sequences[row], alone.sequences[0]), row
        torch.testing.assert_close(batch.quality[row], alone.quality[0], rtol=1e-4, atol=1e-5)


def test_cached_decoding_with_classifier_free_guidance_equals_uncached_for_one_layer():
    model = _prism("llada", layers=1)
    kwargs = dict(input_ids=torch.tensor([[5, 6, 7, 8]]), gen_length=16, block_length=8, num_inference_steps=8, cfg_scale=1.5)
    base = _pipe(model, remasking="none")(**kwargs)
    cached = _pipe(model, remasking="none", kv_cache="dual")(**kwargs)
    assert torch.equal(cached.sequences, base.sequences) and cached.nfe == base.nfe == 2 * 8 + 1


def test_cached_infilling_runs_blocks_over_columns():
    model = _prism("llada", layers=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 60, (2, 16), generator=g)
    x[:, 3::2] = MASK
    kwargs = dict(input_ids=x, gen_length=0, block_length=8, num_inference_steps=6)
    base = _pipe(model, remasking="prism", num_remask=1)(**kwargs)
    cached = _pipe(model, remasking="prism", num_remask=1, kv_cache="dual")(**kwargs)
    assert torch.equal(cached.sequences, base.sequences)
    assert torch.equal(cached.sequences[x != MASK], x[x != MASK])


# ----- confidence-threshold parallel decoding -----------------------------------------------------------------------
@pytest.mark.parametrize("kv_cache", ["none", "dual"])
def test_threshold_decoding_unmasks_every_confident_token_and_ends_blocks_early(kv_cache):
    model = _backbone("llada", sharpen=30.0)
    ids = torch.tensor([[5, 6, 7, 8]])
    kwargs = dict(input_ids=ids, gen_length=32, block_length=8, num_inference_steps=32, return_history=True)
    vanilla = _pipe(model, remasking="none", kv_cache=kv_cache)(**kwargs)
    fast = _pipe(model, remasking="none", kv_cache=kv_cache, confidence_threshold=0.9)(**kwargs)
    assert vanilla.nfe == 32
    assert fast.nfe < vanilla.nfe and not (fast.sequences == MASK).any()
    assert all(int(step["unmasked"].sum()) >= 1 for step in fast.history)  # at least one per step
    assert any(int(step["unmasked"].sum()) > 1 for step in fast.history)  # parallel steps happened
    assert torch.equal(fast.history[-1]["sample"][0, :4], ids[0])
    assert fast.nfe_per_row.tolist() == [fast.nfe]


def test_threshold_one_unmasks_only_certain_tokens():
    """With threshold 1 (never reached by a float32 softmax over 64 tokens) each step unmasks exactly one token."""
    model = _backbone("llada")
    out = _pipe(model, remasking="none", confidence_threshold=1.0)(
        input_ids=torch.tensor([[5, 6]]), gen_length=8, block_length=8, num_inference_steps=8, return_history=True
    )
    assert [int(step["unmasked"].sum()) for step in out.history] == [1] * 8 and out.nfe == 8


# ----- quality-guided decoding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kv_cache", ["none", "dual"])
def test_quality_guided_decoding_invariants(kv_cache):
    model = _prism("llada", sharpen=30.0)
    ids, mask = _padded()
    kwargs = dict(input_ids=ids, attention_mask=mask, gen_length=16, block_length=8, num_inference_steps=16)
    out = _pipe(model, remasking="prism", num_remask=2, kv_cache=kv_cache, confidence_threshold=0.9,
                quality_threshold=0.3)(**kwargs, return_history=True)
    assert not (out.sequences == MASK).any()
    # every step ran one forward; a block may end with one more (the forward that found it good enough); + final
    assert len(out.history) + 1 <= out.nfe <= len(out.history) + 2 + 1 and out.nfe <= 16 + 1
    assert (out.nfe_per_row <= out.nfe).all() and (out.nfe_per_row >= 1).all()
    for row, prompt in enumerate(PROMPTS):
        assert torch.equal(out.history[-1]["sample"][row, : len(prompt)], prompt)


def test_quality_guided_blocks_end_when_every_token_clears_the_threshold():
    """A head that scores everything high ends each block at its first full forward; one that scores everything low
    remasks and redoes tokens until the block's step budget runs out (the last step fills every mask)."""
    model = _prism("llada", sharpen=30.0)
    kwargs = dict(input_ids=torch.tensor([[5, 6, 7, 8]]), gen_length=16, block_length=8, num_inference_steps=16)
    high = _scored(model, 50.0)
    low = _scored(model, -50.0)
    out_high = _pipe(high, remasking="prism", num_remask=2, confidence_threshold=0.9, quality_threshold=0.5)(**kwargs)
    out_low = _pipe(low, remasking="prism", num_remask=2, confidence_threshold=0.9, quality_threshold=0.5)(
        **kwargs, return_history=True)
    assert out_high.nfe < out_low.nfe
    assert out_low.nfe == 16 + 1  # every planned step used (8 per block), then the final scoring forward
    assert sum(int(step["remasked"].sum()) for step in out_low.history) > 0
    assert not (out_low.sequences == MASK).any() and not (out_high.sequences == MASK).any()


def _scored(model, value):
    """A copy of ``model`` whose quality logit is ``value`` everywhere."""
    import copy

    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.quality_head.parameters():
            p.zero_()
        last = [m for m in clone.quality_head.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.fill_(value)
    return clone


# ----- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("builder", [tiny_bert, tiny_mdlm])
def test_a_cache_mode_on_a_backbone_without_a_cache_is_a_clear_error(builder):
    kwargs = {"mask_token_id": 63} if builder is tiny_bert else {}
    model = PrismForMaskedDiffusion.from_backbone(builder(), **kwargs)
    pipe = _pipe(model, remasking="none", kv_cache="dual")
    with pytest.raises(ValueError, match=r"kv_cache='dual'.*has no block-decoding key/value cache.*kv_cache='none'"):
        pipe(input_ids=torch.tensor([[5, 6]]), gen_length=8, num_inference_steps=4, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kv_cache="full"), r"kv_cache='full' is not valid; choose one of \['none', 'prefix', 'dual'\]"),
        (dict(confidence_threshold=0.0), r"confidence_threshold=0.0 is not valid.*\(0, 1\]"),
        (dict(confidence_threshold=1.5), r"confidence_threshold=1.5 is not valid"),
        (dict(quality_threshold=-0.1), r"quality_threshold=-0.1 is not valid"),
        (dict(quality_threshold=True), r"quality_threshold=True is not valid"),
        (dict(remasking="none", quality_threshold=0.5), r"quality_threshold=0.5 needs the quality head: use remasking='prism'"),
        (dict(remasking="remdm_cap", confidence_threshold=0.9), r"confidence_threshold=0.9 .*remasking='remdm_cap'"),
    ],
)
def test_bad_fast_decoding_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrismScheduler(**kwargs)


def test_block_length_must_still_divide_gen_length_with_a_cache():
    pipe = _pipe(_prism("llada"), remasking="none", kv_cache="dual")
    with pytest.raises(ValueError, match="block_length=5 must be a positive divisor of gen_length"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=16, block_length=5, num_inference_steps=4)


def test_quality_guided_refinement_remasks_only_after_the_schedule_and_ends_rows_early():
    """The schedule runs as PRISM's (here: no remasking planned); then refinement steps remask what the head scores
    below the threshold. A head that likes every token ends every row at the first forward after the schedule."""
    model = _prism("llada", sharpen=30.0)
    kwargs = dict(input_ids=torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]]), gen_length=8, num_inference_steps=4,
                  return_history=True, return_quality=False)
    common = dict(remasking="prism", num_remask=1, step_on=1.0, step_off=1.0, prism_loop_steps=4, quality_threshold=0.5)
    low = _pipe(_scored(model, -50.0), **common)(**kwargs)
    assert [int(step["remasked"].sum()) for step in low.history[:4]] == [0, 0, 0, 0]  # schedule: nothing remasked
    assert all(int(step["remasked"].sum()) == 2 for step in low.history[4:-1])  # refinement: one per row per step
    assert low.nfe == 8 and low.nfe_per_row.tolist() == [8, 8] and not (low.sequences == MASK).any()
    high = _pipe(_scored(model, 50.0), **common)(**kwargs)
    assert high.nfe == 4 + 1 and high.nfe_per_row.tolist() == [5, 5]  # the 5th forward finds both rows good enough
    assert len(high.history) == 4


def test_a_head_that_attends_across_positions_refuses_the_cache():
    backbone = _backbone("llada", layers=1)
    model = PrismForMaskedDiffusion.from_backbone(backbone, head_type="transformer").eval()
    pipe = _pipe(model, remasking="prism", num_remask=1, kv_cache="dual")
    with pytest.raises(ValueError, match=r"kv_cache='dual' with the TransformerQualityHead .*pointwise head"):
        pipe(input_ids=torch.tensor([[5, 6]]), gen_length=8, num_inference_steps=4)


def test_dream_cached_infilling_with_left_padding_equals_uncached():
    """The window of a family that numbers positions past the padding (Dream) uses the same positions as the fill."""
    model = _prism("dream", layers=1, seed=2)
    x = torch.randint(1, 60, (1, 20), generator=torch.Generator().manual_seed(0))
    x[:, 6::2] = MASK
    attention = torch.ones_like(x)
    attention[:, :4] = 0
    kwargs = dict(input_ids=x, attention_mask=attention, gen_length=0, block_length=10, num_inference_steps=8)
    base = _pipe(model, remasking="none")(**kwargs)
    cached = _pipe(model, remasking="none", kv_cache="dual")(**kwargs)
    assert torch.equal(cached.sequences, base.sequences)


def test_dream_infilling_refuses_a_mask_at_the_first_real_position_after_padding():
    pipe = _pipe(_prism("dream"), remasking="none")
    x = torch.tensor([[0, 0, 0, 0, MASK, 9, MASK, 11]])
    attention = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="mask token at the first real position of a row"):
        pipe(input_ids=x, attention_mask=attention, gen_length=0, num_inference_steps=3)


def test_quality_threshold_without_refinement_or_parallel_decoding_warns():
    with pytest.warns(UserWarning, match="changes nothing"):
        PrismScheduler(remasking="prism", quality_threshold=0.5)
