"""Issue 15, sampling: rules own their maths, one registry, one sigma cap, one needs-a-head error, `maskable`."""

import math
import warnings

import pytest
import torch

from prism_hf.sampling import remasking, unmasking
from prism_hf.sampling.remasking import (
    REMASK_SCHEDULES,
    REMASKING_RULES,
    CountRemaskingRule,
    RemaskingRule,
    get_remask_schedule,
    get_remasking_rule,
    quality_head_error,
    register_remasking_rule,
    remdm_sigma_cap,
)
from prism_hf.sampling.scheduling_prism import PrismScheduler
from prism_hf.sampling.unmasking import UNMASKING_RULES, get_unmasking_rule, scheduled_clean_count, top_per_row
from prism_hf.utils.registry import Registry

MASK = 10
EPS32 = torch.finfo(torch.float32).eps
VOCAB = 12


def _puzzle(seed=0, batch=3, length=24):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, MASK, (batch, length), generator=g)
    x[torch.rand(batch, length, generator=g) < 0.6] = MASK
    return x


def _run(scheduler, x, steps=6, seed=0, **step_kwargs):
    g = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    outs, conf = [], None
    for k in scheduler.timesteps.tolist():
        logits = torch.randn(x.shape + (VOCAB,), generator=torch.Generator().manual_seed(100 + k))
        quality = torch.randn(x.shape, generator=torch.Generator().manual_seed(200 + k))
        out = scheduler.step(logits, k, x, mask_token_id=MASK, quality_logits=quality, token_confidence=conf,
                             generator=g, **step_kwargs)
        outs.append(out)
        x, conf = out.prev_sample, out.token_confidence
    return outs


# ----- maskable (the package's name) and the deprecated fixed_mask -----------------------------------------------
def test_maskable_is_the_opposite_of_the_deprecated_fixed_mask():
    x = _puzzle()
    fixed = x != MASK
    new = _run(PrismScheduler(remasking="prism", num_remask=2), x, maskable=~fixed)
    with pytest.warns(FutureWarning, match="`fixed_mask` is deprecated; use `maskable`"):
        old = _run(PrismScheduler(remasking="prism", num_remask=2), x, fixed_mask=fixed)
    for a, b in zip(new, old):
        assert torch.equal(a.prev_sample, b.prev_sample) and torch.equal(a.remasked, b.remasked)
    final = new[-1].prev_sample
    assert torch.equal(final[fixed], x[fixed]) and not (final == MASK).any()


def test_maskable_and_fixed_mask_together_is_a_type_error():
    s = PrismScheduler(remasking="none")
    s.set_timesteps(2)
    x = _puzzle()
    with pytest.raises(TypeError, match="pass `maskable` only; `fixed_mask` is its deprecated name"):
        s.step(torch.randn(x.shape + (VOCAB,)), 0, x, mask_token_id=MASK, maskable=x == MASK, fixed_mask=x != MASK)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['fixed'\\]"):
        s.step(torch.randn(x.shape + (VOCAB,)), 0, x, mask_token_id=MASK, fixed=x != MASK)


# ----- one registry ----------------------------------------------------------------------------------------------
def test_rule_registries_are_the_package_registry():
    for registry in (UNMASKING_RULES, REMASKING_RULES, REMASK_SCHEDULES):
        assert isinstance(registry, Registry)
        for name, cls in registry.items():
            assert cls.name == name
    with pytest.raises(ValueError, match="remask_schedule='cosine' is not a known remask count schedule"):
        get_remask_schedule("cosine")
    with pytest.raises(ValueError, match=r"unmasking='greedy'.*register_unmasking_rule"):
        get_unmasking_rule("greedy")
    with pytest.raises(ValueError, match="already registered"):
        register_remasking_rule("prism")(type("Other", (CountRemaskingRule,), {}))


def test_registry_pop_still_works_with_a_deprecation_warning():
    @register_remasking_rule("test_pop_me")
    class PopMe(CountRemaskingRule):
        def score(self, context):
            return context.token_confidence

    assert REMASKING_RULES["test_pop_me"] is PopMe and PopMe.name == "test_pop_me"
    with pytest.warns(FutureWarning, match="unregister"):
        assert REMASKING_RULES.pop("test_pop_me") is PopMe
    assert "test_pop_me" not in REMASKING_RULES
    with pytest.warns(FutureWarning):
        assert REMASKING_RULES.pop("test_pop_me", None) is None
    with pytest.warns(FutureWarning), pytest.raises(KeyError):
        REMASKING_RULES.pop("test_pop_me")


# ----- rules own their maths -------------------------------------------------------------------------------------
def test_a_rule_of_a_new_kind_needs_no_scheduler_change():
    """A rule that decides its own counts (every other clean token, and fill exactly as many as it remasked plus one)
    runs through the scheduler without any `kind` the scheduler knows."""

    @register_remasking_rule("test_even_positions")
    class EvenPositions(RemaskingRule):
        kind = "something-new"

        def remask(self, context):
            even = torch.arange(context.clean.shape[-1]) % 2 == 0
            return context.clean & even

        def num_unmask(self, context, num_remasked):
            return torch.minimum(num_remasked + 1, context.num_masked)

    try:
        s = PrismScheduler(remasking="test_even_positions", unmasking="confidence")
        x = torch.tensor([[1, 2, 3, 4, MASK, MASK, MASK, MASK]])
        s.set_timesteps(3)
        out = s.step(torch.randn(1, 8, VOCAB), 0, x, mask_token_id=MASK)
        assert out.remasked[0].nonzero().flatten().tolist() == [0, 2]
        assert out.num_unmasked.tolist() == [3]
        last = s.step(torch.randn(1, 8, VOCAB), 2, out.prev_sample, mask_token_id=MASK)
        assert not (last.prev_sample == MASK).any() and not last.remasked.any()  # the last step fills everything
    finally:
        REMASKING_RULES.unregister("test_even_positions")


def test_plans_come_from_the_rules():
    prism = PrismScheduler(remasking="prism", num_remask=3, prism_loop_steps=2)
    prism.set_timesteps(4)
    plan = prism._plan
    assert [p.hold for p in plan] == [None, None, None, 3, 3, None] and plan[-1].is_last
    assert [p.remask_count for p in plan] == [3, 3, 3, 3, 0, 0]
    cap = PrismScheduler(remasking="remdm_cap", eta=0.3)
    cap.set_timesteps(4)
    for p in cap._plan:
        assert p.sigma == remdm_sigma_cap(p.alpha_t, p.alpha_s, 0.3) and p.hold is None and p.remask_count == 0
    refine = PrismScheduler(remasking="prism", quality_threshold=0.5, prism_loop_steps=2)
    refine.set_timesteps(3)
    assert [p.refine_below for p in refine._plan] == [None, None, None, 0.0, 0.0]
    assert all(p.hold is None for p in refine._plan)


def test_one_sigma_cap_serves_cap_conf_and_the_binomial_schedule():
    cfg = PrismScheduler().config
    for alpha_t, alpha_s in [(0.0, 0.1), (0.2, 0.3), (0.6, 0.95), (0.9, 1.0)]:
        for eta in (0.01, 0.5, 1.0):
            expected = 0.0 if alpha_t == 0 else min(eta, (1 - alpha_s) / alpha_t)
            assert math.isclose(remdm_sigma_cap(alpha_t, alpha_s, eta), expected)
            assert get_remasking_rule("remdm_cap").sigma(0, 4, alpha_t, alpha_s, eta, cfg) == remdm_sigma_cap(
                alpha_t, alpha_s, eta)
            assert get_remasking_rule("remdm_conf").sigma(0, 4, alpha_t, alpha_s, eta, cfg) == remdm_sigma_cap(
                alpha_t, alpha_s, eta)


def test_binomial_schedule_rate_is_the_cap():
    rows = 3000
    context = remasking.RemaskContext(clean=torch.ones(rows, 20, dtype=torch.bool), num_clean=torch.full((rows,), 20),
                                      quality_logits=None, token_confidence=torch.zeros(rows, 20), alpha_t=0.25,
                                      alpha_s=0.5, generator=torch.Generator().manual_seed(0))
    counts = get_remask_schedule("binomial").counts(1.0, context, 0.3)
    sigma = remdm_sigma_cap(0.25, 0.5, 0.3)
    assert abs(counts.double().mean().item() / 20 - sigma) < 4 * math.sqrt(sigma * (1 - sigma) / (20 * rows))


def test_needs_a_head_error_is_derived_from_the_rules():
    @register_remasking_rule("test_needs_head")
    class NeedsHead(CountRemaskingRule):
        needs_quality = True

        def score(self, context):
            return context.quality_logits

    try:
        message = str(quality_head_error("test_needs_head", "a quality head, but the model (X) has none"))
        assert "remasking='test_needs_head' needs a quality head, but the model (X) has none" in message
        listed = message.split("needs no head: ")[1]
        assert "'test_needs_head'" not in listed and "'prism'" not in listed
        for name in ("none", "random", "confidence", "remdm_cap", "remdm_rescale", "remdm_conf", "remdm_loop"):
            assert repr(name) in listed
        s = PrismScheduler(remasking="test_needs_head", num_remask=1)
        s.set_timesteps(2)
        x = _puzzle()
        with pytest.raises(ValueError, match="remasking='test_needs_head' needs quality_logits"):
            s.step(torch.randn(x.shape + (VOCAB,)), 0, x, mask_token_id=MASK)
    finally:
        REMASKING_RULES.unregister("test_needs_head")


def test_block_length_check_belongs_to_the_rule():
    with pytest.raises(ValueError, match="num_remask=9 is larger than the block"):
        PrismScheduler(remasking="random", num_remask=9).check_block_length(8)
    with pytest.raises(ValueError, match="remask_budget=20 is larger than the block"):
        PrismScheduler(remasking="prism", remask_schedule="budget", remask_budget=20).check_block_length(8)
    PrismScheduler(remasking="remdm_cap", num_remask=9).check_block_length(8)  # ReMDM has no count to fit
    PrismScheduler(remasking="prism", remask_schedule="binomial", num_remask=9).check_block_length(8)


def test_confidence_threshold_selection_is_the_unmasking_rules():
    rule = get_unmasking_rule("confidence")
    masked = torch.tensor([[True, True, True, False], [True, True, False, False]])
    prob = torch.tensor([[0.95, 0.5, 0.92, 0.99], [0.3, 0.4, 0.99, 0.99]])
    scores = prob.masked_fill(~masked, float("-inf"))
    chosen = rule.select(scores, masked, torch.tensor([1, 1]), prob, confidence_threshold=0.9)
    # row 0: every confident mask; row 1: none is confident, so the best-ranked one
    assert chosen.tolist() == [[True, False, True, False], [False, True, False, False]]
    counted = rule.select(scores, masked, torch.tensor([2, 0]), prob)
    assert counted.tolist() == [[True, False, True, False], [False, False, False, False]]


def test_shared_helpers():
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    assert top_per_row(scores, torch.tensor([2]), descending=True).tolist() == [[True, False, True, False]]
    assert top_per_row(scores, torch.tensor([1]), descending=False).tolist() == [[False, False, False, True]]
    n = torch.tensor([10, 7, 3])
    ceil = [scheduled_clean_count(n, k + 1, 4, "ceil").tolist() for k in range(4)]
    llada = [scheduled_clean_count(n, k + 1, 4, "llada").tolist() for k in range(4)]
    assert ceil == [[3, 2, 1], [5, 4, 2], [8, 6, 3], [10, 7, 3]]
    assert llada == [[3, 2, 1], [6, 4, 2], [8, 6, 3], [10, 7, 3]]  # 10 // 4 = 2 each, one more on the first 2 steps
    assert unmasking.UNMASK_SCHEDULES == ("ceil", "llada")


def test_timesteps_ascend_and_step_takes_the_index():
    s = PrismScheduler(remasking="none")
    s.set_timesteps(5)
    assert s.timesteps.tolist() == [0, 1, 2, 3, 4]
    alphas = [(p.alpha_t, p.alpha_s) for p in s._plan]
    assert alphas[0] == (0.0, 0.2) and alphas[-1] == (0.8, 1.0)  # the clean fraction rises with the index
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        s.step(torch.randn(1, 5, VOCAB), 0, torch.full((1, 5), MASK), mask_token_id=MASK, maskable=None)


# ----- the pipeline's public seam and one guidance formula ------------------------------------------------------
def test_pipeline_seam_serves_lm_eval():
    from prism_hf.evaluation import lm_eval_model
    from prism_hf.modeling.families import aligned_logits, mask_token_id_for, max_length_of
    from prism_hf.sampling.pipeline_prism import PrismPipeline, classifier_free_guidance
    from prism_hf.testing import tiny_dream, tiny_mdlm

    assert lm_eval_model.combine_guidance is classifier_free_guidance
    for backbone in (tiny_dream(), tiny_mdlm()):
        pipe = PrismPipeline(model=backbone, scheduler=PrismScheduler(remasking="none"))
        ids = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(0))
        logits, quality = pipe.model_forward(ids)
        assert quality is None and torch.equal(logits, aligned_logits(backbone, ids))
        assert pipe.max_length == max_length_of(backbone) and pipe.resolve_mask_token_id() == mask_token_id_for(backbone)
    assert PrismPipeline(model=tiny_dream(), scheduler=PrismScheduler()).takes_padding_mask
    assert not PrismPipeline(model=tiny_mdlm(), scheduler=PrismScheduler()).takes_padding_mask


def test_guided_forward_is_llada_guidance():
    from prism_hf.sampling.pipeline_prism import PrismPipeline, classifier_free_guidance
    from prism_hf.testing import tiny_llada

    pipe = PrismPipeline(model=tiny_llada(), scheduler=PrismScheduler(remasking="none"))
    mask = pipe.resolve_mask_token_id()
    ids = torch.tensor([[5, 6, 7, mask, mask, 9], [8, 9, 10, 11, mask, mask]])
    condition = ids != mask
    guided, quality, forwards, tokens = pipe.guided_forward(ids, None, condition, mask, 1.5)
    cond, _ = pipe.model_forward(ids)
    uncond, _ = pipe.model_forward(ids.masked_fill(condition, mask))
    assert forwards == 2 and tokens == 2 * ids.numel() and quality is None
    scale = (cond.abs() + uncond.abs()).max().item()
    # a batch of 2B rows against two batches of B rows: the same float32 matmuls (width 32) up to reduction order,
    # amplified by the guidance's 2.5 + 1.5
    assert torch.allclose(guided, uncond + 2.5 * (cond - uncond), rtol=0, atol=1e-5 * math.sqrt(32) * 4 * scale)
    assert torch.equal(classifier_free_guidance(cond, None, 1.5), cond.float())
    assert torch.equal(classifier_free_guidance(cond, uncond, 0.0), cond.float())
    # the lm-eval form cond + s (cond - uncond) is the same quantity
    assert torch.allclose(classifier_free_guidance(cond, uncond, 1.5), cond + 1.5 * (cond - uncond), rtol=0,
                          atol=8 * EPS32 * 4 * scale)  # a few roundings of terms up to (2.5 + 1.5) * scale
