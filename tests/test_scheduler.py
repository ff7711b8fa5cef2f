"""PrismScheduler: every unmasking / remasking rule, the count schedules, the window, PRISM-loop, ReMDM sigmas."""

import math

import pytest
import torch

from prism_hf.remasking import (
    REMASKING_RULES,
    CountRemaskingRule,
    RemaskContext,
    RemdmConfRemasking,
    RemdmLoopRemasking,
    get_remasking_rule,
    register_remasking_rule,
)
from prism_hf.scheduling_prism import PrismScheduler, PrismSchedulerOutput
from prism_hf.unmasking import UNMASKING_RULES, UnmaskingRule, register_unmasking_rule

MASK = 10
VOCAB = 12
EPS32 = torch.finfo(torch.float32).eps


def _noise(p: float, n: int, sigmas: float = 4.0) -> float:
    """``sigmas`` standard errors of a frequency (or mean rate) estimated from ``n`` independent draws of probability ``p``."""
    return sigmas * math.sqrt(p * (1 - p) / n)


def _softmax_tol(vocab: int) -> float:
    """Absolute tolerance between two float32 softmaxes of the same logits over ``vocab`` entries computed by different
    kernels (probabilities are at most 1): a few epsilons per term of the normalising sum."""
    return 8 * EPS32 * math.sqrt(vocab)

ALL_REMASKING = ["none", "prism", "random", "confidence", "remdm_cap", "remdm_rescale", "remdm_conf", "remdm_loop"]
ALL_UNMASKING = ["confidence", "margin", "entropy", "random"]
COUNT_RULES = ["prism", "random", "confidence"]


def _puzzle(batch=4, length=30, n_masks=(20, 25, 5, 12), seed=0):
    """Rows with different numbers of masks at random places; unmasked positions are fixed (given clues)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, MASK, (batch, length), generator=g)
    for row, n in enumerate(n_masks[:batch]):
        pos = torch.randperm(length, generator=g)[:n]
        x[row, pos] = MASK
    return x


def _run_block(scheduler, x, fixed, steps, seed=0, quality_fn=None, logits_fn=None, record=None):
    g = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    conf = None
    total = torch.zeros(x.shape[0], dtype=torch.long)
    for k in scheduler.timesteps.tolist():
        logits = logits_fn(x) if logits_fn else torch.randn(x.shape + (VOCAB,), generator=g)
        quality = quality_fn(x) if quality_fn else torch.randn(x.shape, generator=g)
        out = scheduler.step(logits, k, x, mask_token_id=MASK, quality_logits=quality, fixed_mask=fixed,
                             token_confidence=conf, generator=g)
        if record is not None:
            record.append((k, x, out))
        x, conf = out.prev_sample, out.token_confidence
        total += out.num_remasked
    return x, total


def test_config_fields_and_round_trip(tmp_path):
    s = PrismScheduler(unmasking="random", remasking="prism", num_remask=4, remask_schedule="budget", remask_budget=7,
                       eta=0.2, step_on=0.25, step_off=0.75, prism_loop_steps=3, temperature=0.5, top_k=3, top_p=0.9,
                       block_length=32)
    s.save_pretrained(tmp_path)
    loaded = PrismScheduler.from_pretrained(tmp_path)
    for key in ("unmasking", "remasking", "num_remask", "remask_schedule", "remask_budget", "eta", "step_on", "step_off",
                "prism_loop_steps", "temperature", "top_k", "top_p", "block_length"):
        assert loaded.config[key] == s.config[key], key
    assert loaded.config.remask_budget == 7 and loaded.config.unmasking == "random"
    swapped = PrismScheduler.from_config(s.config, remasking="random")
    assert swapped.remasking_rule.name == "random" and swapped.config.num_remask == 4


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"unmasking": "greedy"}, "unmasking='greedy'"),
        ({"remasking": "lowest"}, "remasking='lowest'"),
        ({"remask_schedule": "cosine"}, "remask_schedule='cosine'"),
        ({"eta": 1.5}, "eta=1.5"),
        ({"eta": -0.1}, "eta=-0.1"),
        ({"num_remask": -1}, "num_remask=-1"),
        ({"step_on": 0.8, "step_off": 0.2}, "step_on=0.8"),
        ({"prism_loop_steps": 2, "remasking": "remdm_cap"}, "prism_loop_steps=2"),
        ({"prism_loop_steps": 2, "remasking": "none"}, "prism_loop_steps=2"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"temperature": float("inf")}, "temperature=inf"),
        ({"temperature": True}, "temperature=True"),
        ({"num_remask": True}, "num_remask=True"),
        ({"num_remask": 2.0}, "num_remask=2.0"),
        ({"remask_budget": -3}, "remask_budget=-3"),
        ({"prism_loop_steps": True}, "prism_loop_steps=True"),
        ({"top_k": 0}, "top_k=0"),
        ({"top_k": True}, "top_k=True"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"top_p": float("nan")}, "top_p=nan"),
        ({"top_p": True}, "top_p=True"),
        ({"eta": float("nan")}, "eta=nan"),
        ({"block_length": 0}, "block_length=0"),
        ({"top_p_mode": "hf"}, "top_p_mode='hf'"),
        ({"confidence_source": "tempered"}, "confidence_source='tempered'"),
        ({"unmask_schedule": "cosine"}, "unmask_schedule='cosine'"),
        ({"remasking": "low_confidence"}, "unmasking='confidence'"),  # LLaDA's name: the error says what it is here
        ({"unmasking": "low_confidence"}, "unmasking='confidence'"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        PrismScheduler(**kwargs)


def test_unknown_rule_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        PrismScheduler(remasking="nope")
    for name in ALL_REMASKING:
        assert name in str(err.value)
    with pytest.raises(ValueError) as err:
        PrismScheduler(unmasking="nope")
    for name in ALL_UNMASKING:
        assert name in str(err.value)


def test_rule_names_are_registered():
    assert set(ALL_REMASKING) <= set(REMASKING_RULES)
    assert set(ALL_UNMASKING) <= set(UNMASKING_RULES)


def test_step_needs_set_timesteps_and_valid_index():
    s = PrismScheduler()
    x = _puzzle()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(torch.randn(x.shape + (VOCAB,)), 0, x, mask_token_id=MASK, quality_logits=torch.randn(x.shape))
    s.set_timesteps(4)
    with pytest.raises(ValueError, match="timestep=4"):
        s.step(torch.randn(x.shape + (VOCAB,)), 4, x, mask_token_id=MASK, quality_logits=torch.randn(x.shape))
    with pytest.raises(ValueError, match="num_inference_steps=0"):
        s.set_timesteps(0)


def test_prism_step_without_quality_is_a_clear_error():
    s = PrismScheduler(remasking="prism", num_remask=2)
    s.set_timesteps(4)
    x = _puzzle()
    with pytest.raises(ValueError, match="quality"):
        s.step(torch.randn(x.shape + (VOCAB,)), 1, x, mask_token_id=MASK)


@pytest.mark.parametrize("remasking", ALL_REMASKING)
@pytest.mark.parametrize("unmasking", ALL_UNMASKING)
def test_invariants_for_every_rule(remasking, unmasking):
    """Fixed positions never change, remasked and unmasked are disjoint, a remasked position is not refilled in the
    same step, the mask token is never drawn, and no mask remains at the end."""
    s = PrismScheduler(unmasking=unmasking, remasking=remasking, num_remask=3, eta=0.5 if remasking != "remdm_conf" else None)
    x0 = _puzzle()
    fixed = x0 != MASK
    record = []
    final, total = _run_block(s, x0, fixed, steps=8, record=record, seed=1)
    assert not (final == MASK).any()
    assert torch.equal(final[fixed], x0[fixed])
    for _, before, out in record:
        assert not (out.unmasked & out.remasked).any()
        assert not (out.unmasked & ~(before == MASK)).any(), "only masked positions are unmasked"
        assert not (out.remasked & (before == MASK)).any(), "only clean positions are remasked"
        assert (out.prev_sample[out.remasked] == MASK).all(), "remasked positions stay masked in this step"
        assert not ((out.remasked | out.unmasked) & fixed).any()
        assert torch.equal(out.num_remasked, out.remasked.sum(-1))
        assert torch.equal(out.num_unmasked, out.unmasked.sum(-1))
        assert (out.sampled_tokens != MASK).all()
    if remasking == "none":
        assert total.sum() == 0
    if remasking in COUNT_RULES:
        assert total.sum() > 0


@pytest.mark.parametrize("remasking", ["none"] + COUNT_RULES)
def test_count_rules_keep_the_clean_count_on_schedule(remasking):
    """Unmask count per step = schedule count + number just remasked, per row; remask <= num_remask."""
    steps, r = 10, 4
    s = PrismScheduler(unmasking="random", remasking=remasking, num_remask=r)
    x0 = _puzzle()
    fixed = x0 != MASK
    n = (~fixed).sum(-1)
    record = []
    _run_block(s, x0, fixed, steps=steps, record=record)
    for k, before, out in record:
        clean_after = ((out.prev_sample != MASK) & ~fixed).sum(-1)
        target = torch.ceil(n.double() * (k + 1) / steps - 1e-9).long()
        assert torch.equal(clean_after, target), (k, clean_after, target)
        clean_before = ((before != MASK) & ~fixed).sum(-1)
        assert torch.equal(out.num_unmasked, target - clean_before + out.num_remasked)
        assert (out.num_remasked <= r).all()
        # one clean generated token always stays, and every remasked token can be refilled later (at most the masks
        # that stay after the step)
        assert (out.num_remasked <= (clean_before - 1).clamp(min=0)).all()
        assert (out.num_remasked <= n - target).all()


def test_counts_are_per_row_not_row_zero():
    """The public code used row 0's count for every row; here a row with few masks does not limit the others."""
    length = 40
    x0 = torch.zeros(2, length, dtype=torch.long)
    x0[0, :3] = MASK  # row 0: 3 masks
    x0[1, :36] = MASK  # row 1: 36 masks
    fixed = x0 != MASK
    s = PrismScheduler(unmasking="random", remasking="prism", num_remask=4)
    record = []
    _run_block(s, x0, fixed, steps=6, record=record)
    remasked_row1 = [int(out.num_remasked[1]) for _, _, out in record]
    remasked_row0 = [int(out.num_remasked[0]) for _, _, out in record]
    assert max(remasked_row1) == 4
    assert sum(remasked_row1) > sum(remasked_row0)
    assert max(remasked_row0) <= 3


def test_prism_remasks_the_lowest_quality_tokens():
    s = PrismScheduler(unmasking="confidence", remasking="prism", num_remask=2)
    s.set_timesteps(4)
    x = torch.tensor([[1, 2, 3, 4, 5, MASK, MASK, MASK, MASK, MASK, MASK, MASK]])
    fixed = torch.zeros_like(x, dtype=torch.bool)
    fixed[0, 0] = True  # a prompt token with the lowest quality of all must not be remasked
    quality = torch.tensor([[-9.0, 0.5, -3.0, 2.0, -2.0, 0, 0, 0, 0, 0, 0, 0]])
    out = s.step(torch.randn(1, 12, VOCAB), 1, x, mask_token_id=MASK, quality_logits=quality, fixed_mask=fixed)
    assert out.remasked[0].nonzero().flatten().tolist() == [2, 4]


def test_confidence_remasking_uses_the_unmasking_probability():
    s = PrismScheduler(unmasking="confidence", remasking="confidence", num_remask=1)
    s.set_timesteps(4)
    x = torch.tensor([[1, 2, 3, MASK, MASK, MASK, MASK, MASK]])
    psi = torch.tensor([[0.9, 0.2, 0.5, 0, 0, 0, 0, 0]])
    out = s.step(torch.randn(1, 8, VOCAB), 1, x, mask_token_id=MASK, token_confidence=psi)
    assert out.remasked[0].nonzero().flatten().tolist() == [1]


def _peaked_logits(length, peaks):
    """Logits whose softmax at position i puts mass peaks[i] on token 0 and the rest spread over 1..9."""
    probs = torch.zeros(1, length, VOCAB)
    for i, (top, second) in enumerate(peaks):
        probs[0, i, 0] = top
        probs[0, i, 1] = second
        probs[0, i, 2:MASK] = (1 - top - second) / (MASK - 2)
    probs[..., MASK:] = 1e-9
    return probs.clamp_min(1e-9).log()


@pytest.mark.parametrize(
    "unmasking, expected",
    [
        # (top1, top2) per position: confidence -> highest top1; margin -> largest top1 - top2; entropy -> most peaked
        ("confidence", 1),
        ("margin", 2),
        ("entropy", 0),
    ],
)
def test_unmasking_rules_pick_their_position(unmasking, expected):
    peaks = [(0.5, 0.49), (0.55, 0.2), (0.52, 0.01)]  # entropies 0.76, 1.52, 1.72 nats
    logits = _peaked_logits(3, peaks)
    s = PrismScheduler(unmasking=unmasking, remasking="none")
    s.set_timesteps(3)
    x = torch.full((1, 3), MASK)
    out = s.step(logits, 0, x, mask_token_id=MASK)
    assert out.unmasked[0].nonzero().flatten().tolist() == [expected]


def test_random_unmasking_depends_on_the_generator():
    s = PrismScheduler(unmasking="random", remasking="none")
    s.set_timesteps(8)
    x = torch.full((1, 64), MASK)
    logits = torch.randn(1, 64, VOCAB)
    picks = {tuple(s.step(logits, 0, x, mask_token_id=MASK, generator=torch.Generator().manual_seed(seed)).unmasked[0].nonzero().flatten().tolist()) for seed in range(4)}
    assert len(picks) > 1
    again = s.step(logits, 0, x, mask_token_id=MASK, generator=torch.Generator().manual_seed(0)).unmasked
    first = s.step(logits, 0, x, mask_token_id=MASK, generator=torch.Generator().manual_seed(0)).unmasked
    assert torch.equal(again, first)


def test_sampling_temperature_top_k_and_mask_never_drawn():
    logits = torch.randn(2, 50, VOCAB)
    logits[..., MASK] = 100.0  # the model loves the mask token; it must never be drawn
    greedy = PrismScheduler(remasking="none")
    tokens, prob, _ = greedy.sample_tokens(logits, mask_token_id=MASK)
    assert (tokens != MASK).all()
    expected = logits.index_fill(-1, torch.tensor([MASK]), float("-inf")).argmax(-1)
    assert torch.equal(tokens, expected)
    untempered = logits.index_fill(-1, torch.tensor([MASK]), float("-inf")).softmax(-1).gather(-1, expected[..., None])[..., 0]
    top1 = PrismScheduler(remasking="none", temperature=1.0, top_k=1)
    tokens_k1, prob_k1, _ = top1.sample_tokens(logits, generator=torch.Generator().manual_seed(0), mask_token_id=MASK)
    # The draw is top-1; the confidence is the model's own (untempered, unfiltered) probability of the drawn token.
    assert torch.equal(tokens_k1, expected) and torch.allclose(prob_k1, untempered, rtol=0, atol=_softmax_tol(VOCAB))
    top1_sampling = PrismScheduler(remasking="none", temperature=1.0, top_k=1, confidence_source="sampling")
    _, prob_sampling, _ = top1_sampling.sample_tokens(logits, generator=torch.Generator().manual_seed(0), mask_token_id=MASK)
    assert torch.equal(prob_sampling, torch.ones_like(prob_sampling))
    hot = PrismScheduler(remasking="none", temperature=1.0)
    tokens_hot, _, _ = hot.sample_tokens(logits, generator=torch.Generator().manual_seed(0), mask_token_id=MASK)
    assert (tokens_hot != MASK).all() and not torch.equal(tokens_hot, expected)
    nucleus = PrismScheduler(remasking="none", temperature=1.0, top_p=1e-6)
    tokens_p, _, _ = nucleus.sample_tokens(logits, generator=torch.Generator().manual_seed(0), mask_token_id=MASK)
    assert torch.equal(tokens_p, expected)


def test_fixed_schedule_respects_the_window():
    steps = 8
    s = PrismScheduler(unmasking="random", remasking="random", num_remask=1, step_on=0.5, step_off=0.75)
    x0 = torch.full((3, 40), MASK)
    record = []
    _run_block(s, x0, torch.zeros_like(x0, dtype=torch.bool), steps=steps, record=record)
    for k, _, out in record:
        if 4 <= k < 6:
            assert (out.num_remasked == 1).all(), k
        else:
            assert (out.num_remasked == 0).all(), k


def test_budget_schedule_spreads_the_budget_over_the_middle_steps():
    steps, budget = 8, 12  # 12 over the 6 middle steps: 2 each
    s = PrismScheduler(unmasking="random", remasking="prism", remask_schedule="budget", remask_budget=budget)
    x0 = torch.full((2, 64), MASK)
    record = []
    _, total = _run_block(s, x0, torch.zeros_like(x0, dtype=torch.bool), steps=steps, record=record)
    assert total.tolist() == [budget, budget]
    per_step = [int(out.num_remasked[0]) for _, _, out in record]
    assert per_step == [0, 2, 2, 2, 2, 2, 2, 0]


def test_binomial_schedule_matches_its_expectation():
    steps, eta = 4, 0.3
    s = PrismScheduler(unmasking="random", remasking="random", remask_schedule="binomial", eta=eta)
    s.set_timesteps(steps)
    rows, length = 4000, 40
    x = torch.full((rows, length), MASK)
    x[:, :20] = 1  # half clean: alpha_t = 1/4 at step 1 is the schedule's, not the row's
    g = torch.Generator().manual_seed(0)
    out = s.step(torch.randn(rows, length, VOCAB, generator=g), 1, x, mask_token_id=MASK, generator=g)
    alpha_t, alpha_s = 1 / steps, 2 / steps
    sigma = min(eta, (1 - alpha_s) / alpha_t)
    mean = out.num_remasked.double().mean().item()
    # mean of `rows` Binomial(20, sigma) draws: 4 standard errors of 20 * (a rate over 20 * rows tokens)
    assert abs(mean - 20 * sigma) < 20 * _noise(sigma, 20 * rows), (mean, 20 * sigma)
    assert out.num_remasked.double().std() > 0  # random per row


def test_prism_loop_holds_the_clean_count_and_refills():
    steps, loop, r = 6, 3, 2
    s = PrismScheduler(unmasking="confidence", remasking="prism", num_remask=r, prism_loop_steps=loop)
    x0 = torch.full((2, 24), MASK)
    fixed = torch.zeros_like(x0, dtype=torch.bool)
    record = []
    final, _ = _run_block(s, x0, fixed, steps=steps, record=record)
    assert len(record) == steps + loop
    assert not (final == MASK).any()
    masks_after = [int((out.prev_sample == MASK).sum(-1)[0]) for _, _, out in record]
    # last schedule step and every loop step but the final one hold r masks; the final step fills everything
    assert masks_after[steps - 1 : steps + loop - 1] == [r] * loop
    assert masks_after[-1] == 0
    for _, _, out in record[steps : steps + loop - 1]:
        assert (out.num_remasked == r).all() and (out.num_unmasked == r).all()


def test_remdm_sigma_formulas():
    cap, rescale, conf = (get_remasking_rule(n) for n in ("remdm_cap", "remdm_rescale", "remdm_conf"))
    cfg = PrismScheduler().config
    for alpha_t, alpha_s in [(0.2, 0.3), (0.5, 0.6), (0.9, 1.0), (0.0, 0.1), (0.6, 0.95)]:
        sigma_max = 0.0 if alpha_t == 0 else min(1.0, (1 - alpha_s) / alpha_t)
        for eta in (0.008, 0.04, 0.5):
            expected_cap = 0.0 if alpha_t == 0 else min(eta, (1 - alpha_s) / alpha_t)
            assert math.isclose(cap.sigma(0, 10, alpha_t, alpha_s, eta, cfg), expected_cap)
            assert math.isclose(rescale.sigma(0, 10, alpha_t, alpha_s, eta, cfg), eta * sigma_max)
        assert math.isclose(conf.sigma(0, 10, alpha_t, alpha_s, 1.0, cfg), sigma_max)
    assert cap.default_eta == 0.008 and rescale.default_eta == 0.015 and get_remasking_rule("remdm_loop").default_eta == 0.02


def test_remdm_conf_per_token_sigma_is_softmax_of_negative_psi():
    clean = torch.tensor([[True, True, True, False]])
    psi = torch.tensor([[0.9, 0.1, 0.5, 0.0]])
    ctx = RemaskContext(clean=clean, num_clean=clean.sum(-1), quality_logits=None, token_confidence=psi, alpha_t=0.5,
                        alpha_s=0.6)
    sigma = RemdmConfRemasking().token_sigma(ctx, 0.4)
    expected = torch.softmax(-psi[0, :3], -1) * 0.4
    assert torch.allclose(sigma[0, :3], expected) and sigma[0, 3] == 0
    assert sigma[0, 1] > sigma[0, 2] > sigma[0, 0]


def test_remdm_loop_phases():
    cfg = PrismScheduler(remasking="remdm_loop").config  # t_on 0.55, t_off 0.05, alpha_on 0.9
    rule = RemdmLoopRemasking()
    steps = 20
    alphas = rule.alphas(steps, cfg)
    assert alphas[0] == 0.0 and alphas[-1] == 1.0
    assert all(b >= a - 1e-12 for a, b in zip(alphas, alphas[1:]))
    times = [1 - k / steps for k in range(steps + 1)]
    for t, a in zip(times, alphas):
        if 0.05 <= t <= 0.55:
            assert math.isclose(a, 0.9), (t, a)
    sigmas = [rule.sigma(k, steps, alphas[k], alphas[k + 1], 0.02, cfg) for k in range(steps)]
    for k, sig in enumerate(sigmas):
        in_loop = times[k] <= 0.55 + 1e-9 and times[k + 1] >= 0.05 - 1e-9
        assert sig == (0.02 if in_loop else 0.0)
    assert sum(1 for s_ in sigmas if s_ > 0) >= 8


def test_remdm_remask_rate_and_unmask_probability():
    """Empirical check of ReMDM's two formulas on a big batch: remask rate sigma_t, unmask rate
    (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)."""
    steps, eta = 4, 0.3
    s = PrismScheduler(unmasking="random", remasking="remdm_cap", eta=eta)
    s.set_timesteps(steps)
    rows, length = 3000, 40
    x = torch.full((rows, length), MASK)
    x[:, :10] = 1  # 10 clean, 30 masked
    g = torch.Generator().manual_seed(0)
    out = s.step(torch.randn(rows, length, VOCAB, generator=g), 1, x, mask_token_id=MASK, generator=g)
    alpha_t, alpha_s = 0.25, 0.5
    sigma = min(eta, (1 - alpha_s) / alpha_t)
    p_unmask = (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t)
    assert abs(out.num_remasked.double().mean().item() / 10 - sigma) < _noise(sigma, 10 * rows)
    assert abs(out.num_unmasked.double().mean().item() / 30 - p_unmask) < _noise(p_unmask, 30 * rows)


def test_a_new_rule_is_one_class():
    @register_remasking_rule("test_highest_psi")
    class HighestPsiFirst(CountRemaskingRule):
        def score(self, context):
            return -context.token_confidence

    @register_unmasking_rule("test_leftmost")
    class Leftmost(UnmaskingRule):
        def score(self, probs, sampled_tokens, token_prob, generator=None):
            return -torch.arange(token_prob.shape[-1], dtype=torch.float).expand_as(token_prob)

    try:
        s = PrismScheduler(unmasking="test_leftmost", remasking="test_highest_psi", num_remask=1)
        s.set_timesteps(4)
        x = torch.tensor([[1, 2, 3, MASK, MASK, MASK, MASK, MASK]])
        psi = torch.tensor([[0.1, 0.9, 0.5, 0, 0, 0, 0, 0]])
        out = s.step(torch.randn(1, 8, VOCAB), 1, x, mask_token_id=MASK, token_confidence=psi)
        assert out.remasked[0].nonzero().flatten().tolist() == [1]
        assert out.unmasked[0].nonzero().flatten().tolist() == [3, 4]  # 2 to stay on schedule + 1 remasked
    finally:
        REMASKING_RULES.pop("test_highest_psi")
        UNMASKING_RULES.pop("test_leftmost")


def test_tuple_output_and_model_output_object():
    from prism_hf import PrismModelOutput

    s = PrismScheduler(remasking="prism", num_remask=1)
    s.set_timesteps(4)
    x = _puzzle()
    model_output = PrismModelOutput(logits=torch.randn(x.shape + (VOCAB,)), quality_logits=torch.randn(x.shape))
    out = s.step(model_output, 1, x, mask_token_id=MASK, fixed_mask=x != MASK)
    assert isinstance(out, PrismSchedulerOutput)
    as_tuple = s.step(model_output, 1, x, mask_token_id=MASK, fixed_mask=x != MASK, return_dict=False)
    assert torch.equal(as_tuple[0], out.prev_sample) and torch.equal(as_tuple[2], out.remasked)


def test_temperature_sampling_follows_the_posterior():
    logits = torch.full((1, 20000, VOCAB), -30.0)
    logits[..., 3], logits[..., 4], logits[..., 5] = 0.0, 1.0, 2.0
    logits[..., MASK] = 5.0  # dropped: the draw is from the posterior renormalised without the mask token
    s = PrismScheduler(remasking="none", temperature=1.0)
    tokens, prob, _ = s.sample_tokens(logits, generator=torch.Generator().manual_seed(0), mask_token_id=MASK)
    freq = torch.bincount(tokens.flatten(), minlength=VOCAB).double() / tokens.numel()
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.double), 0)
    n = tokens.numel()
    assert all(abs(freq[3 + i].item() - expected[i].item()) < _noise(expected[i].item(), n) for i in range(3))
    assert torch.allclose(prob[tokens == 5], torch.tensor(expected[2].item(), dtype=torch.float), rtol=0,
                          atol=_softmax_tol(VOCAB))
    cold = PrismScheduler(remasking="none", temperature=0.25)
    cold_tokens, _, _ = cold.sample_tokens(logits, generator=torch.Generator().manual_seed(0), mask_token_id=MASK)
    assert (cold_tokens == 5).double().mean() > freq[5] + 0.1


@pytest.mark.parametrize("vocab", [12, 100])  # the short-row and the long-row sampling paths
@pytest.mark.parametrize("unmasking", ["confidence", "margin"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_token_probabilities_exclude_the_mask_token(vocab, unmasking, temperature):
    mask_id = 7
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, vocab, generator=g) * 3
    logits[0, :, mask_id] = 50.0  # row 0: the mask token would win everywhere
    s = PrismScheduler(unmasking=unmasking, remasking="none", temperature=temperature)
    tokens, token_prob, probs = s.sample_tokens(logits, generator=g, mask_token_id=mask_id)
    reference = logits.index_fill(-1, torch.tensor([mask_id]), float("-inf")).softmax(-1)
    assert (tokens != mask_id).all()
    if temperature == 0:
        assert torch.equal(tokens, reference.argmax(-1))
    assert torch.allclose(token_prob, reference.gather(-1, tokens[..., None]).squeeze(-1), rtol=0, atol=_softmax_tol(vocab))
    if unmasking == "margin":
        assert torch.allclose(probs, reference, rtol=0, atol=_softmax_tol(vocab))
    else:
        assert probs is None


@pytest.mark.parametrize("unmasking", ["confidence", "margin", "entropy"])
@pytest.mark.parametrize("vocab", [12, 100])
def test_compact_and_full_paths_agree(unmasking, vocab):
    """The CPU path computes the posterior only at masked positions; the accelerator path on the whole tensor."""
    x0 = _puzzle()
    fixed = x0 != MASK
    results = []
    for compact in (True, False):
        s = PrismScheduler(unmasking=unmasking, remasking="prism", num_remask=2)
        s.compact_masked_positions = compact
        g = torch.Generator().manual_seed(0)
        s.set_timesteps(6)
        x, conf = x0, None
        for k in s.timesteps.tolist():
            logits = torch.randn(x.shape + (vocab,), generator=g)
            out = s.step(logits, k, x, mask_token_id=MASK, quality_logits=torch.randn(x.shape, generator=g), fixed_mask=fixed,
                         token_confidence=conf)
            x, conf = out.prev_sample, out.token_confidence
        results.append((x, conf))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.allclose(results[0][1], results[1][1])


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_leaves_the_callers_tensors_alone(compact, dtype):
    s = PrismScheduler(remasking="prism", num_remask=2)
    s.compact_masked_positions = compact
    s.set_timesteps(4)
    x = _puzzle()
    logits = torch.randn(x.shape + (VOCAB,)).to(dtype)
    logits[..., MASK] = 3.0
    quality = torch.randn(x.shape)
    copies = (x.clone(), logits.clone(), quality.clone())
    out = s.step(logits, 1, x, mask_token_id=MASK, quality_logits=quality, fixed_mask=x != MASK)
    assert torch.equal(x, copies[0]) and torch.equal(logits, copies[1]) and torch.equal(quality, copies[2])
    assert (out.sampled_tokens[x == MASK] != MASK).all()
