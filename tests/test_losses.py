"""The PRISM loss functions (prism_hf.losses), tested without a Trainer."""

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from prism_hf.losses import (
    binary_auroc,
    forward_mask,
    mdm_loss,
    prism_step,
    quality_accuracy,
    sample_proposals,
    select_update_positions,
    self_correction_loss,
)

MASK = 9  # the mask id of the toy vocabulary used below (ids 0..9)


EPS32 = torch.finfo(torch.float32).eps


def _noise(p: float, n: int, sigmas: float = 4.0) -> float:
    """``sigmas`` standard errors of a frequency estimated from ``n`` independent draws of probability ``p``."""
    return sigmas * math.sqrt(p * (1 - p) / n)


def _fp32_rel(terms: int) -> float:
    """Relative tolerance of a float32 result summed over ``terms`` terms, against the same value in float64."""
    return 8 * EPS32 * math.sqrt(terms)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----- forward process --------------------------------------------------------------------------------
def test_forward_mask_respects_maskable_and_writes_mask_id():
    x = torch.randint(0, MASK, (64, 20), generator=_gen())
    maskable = torch.rand(64, 20, generator=_gen(1)) < 0.6
    noisy, masked, t = forward_mask(x, maskable, MASK, eps=0.2, generator=_gen(2))
    assert not (masked & ~maskable).any()
    assert masked.any()
    assert torch.equal(noisy[masked], torch.full_like(noisy[masked], MASK))
    assert torch.equal(noisy[~masked], x[~masked])
    assert t.shape == (64,) and (t >= 0.2).all() and (t < 1).all()


def test_forward_mask_rate_follows_t():
    x = torch.zeros(4000, 50, dtype=torch.long)
    _, masked, t = forward_mask(x, torch.ones_like(x, dtype=torch.bool), MASK, generator=_gen())
    # Per row the masked fraction is Binomial(50, t)/50: given t its mean over rows matches t within the binomial
    # noise, E[t (1 - t)] / 50 per row = (1/6) / 50 for t ~ U(0, 1).
    rows = x.shape[0]
    assert abs(masked.float().mean(1).mean().item() - t.mean().item()) < 4 * math.sqrt((1 / 6) / 50 / rows)
    assert abs(t.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / rows)  # U(eps, 1) with eps = 1e-3: variance 1/12


def test_forward_mask_antithetic_spreads_t():
    x = torch.zeros(8, 4, dtype=torch.long)
    _, _, t = forward_mask(x, torch.ones_like(x, dtype=torch.bool), MASK, eps=0.0, antithetic=True, generator=_gen())
    gaps = t.sort().values.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / 8), rtol=0, atol=8 * EPS32)  # values in [0, 1]


@pytest.mark.parametrize("eps", [-0.1, 1.0])
def test_forward_mask_bad_eps(eps):
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="eps"):
        forward_mask(x, torch.ones_like(x, dtype=torch.bool), MASK, eps=eps)


def test_forward_mask_bad_maskable_shape():
    x = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="maskable"):
        forward_mask(x, torch.ones(2, 4, dtype=torch.bool), MASK)


# ----- MDM loss ---------------------------------------------------------------------------------------
def test_mdm_loss_hand_computed():
    # B=2, L=2, V=2. Row 0 masks position 1 (target 0), t=0.5; row 1 masks position 0 (target 1), t=0.25.
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [5.0, 5.0]]])
    x = torch.tensor([[1, 0], [1, 0]])
    masked = torch.tensor([[False, True], [True, False]])
    t = torch.tensor([0.5, 0.25])
    ce_row0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce_row1 = -math.log(math.exp(1) / (1 + math.exp(1)))
    expected = (ce_row0 / 0.5 + ce_row1 / 0.25) / (2 * 2)
    assert mdm_loss(logits, x, masked, t).item() == pytest.approx(expected, rel=_fp32_rel(4))


def test_mdm_loss_is_zero_not_nan_when_nothing_masked():
    logits = torch.randn(2, 3, 5)
    loss = mdm_loss(logits, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool), torch.ones(2))
    assert loss.item() == 0.0


# ----- proposals --------------------------------------------------------------------------------------
def test_sample_proposals_greedy_and_suppressed_token():
    logits = torch.tensor([[[0.0, 3.0, 1.0], [5.0, 0.0, 4.0]]])
    ids, conf = sample_proposals(logits, temperature=0.0)
    assert ids.tolist() == [[1, 0]]
    probs = logits.softmax(-1)
    assert torch.allclose(conf, torch.stack([probs[0, 0, 1], probs[0, 1, 0]])[None])
    ids, _ = sample_proposals(logits, temperature=0.0, suppress_token_id=0)
    assert ids.tolist() == [[1, 2]]


def test_sample_proposals_categorical_with_temperature():
    logits = torch.log(torch.tensor([0.2, 0.8])).view(1, 1, 2).expand(1, 20000, 2)
    n = logits.shape[1]
    ids, _ = sample_proposals(logits, temperature=1.0, generator=_gen())
    assert abs(ids.float().mean().item() - 0.8) < _noise(0.8, n)
    ids, _ = sample_proposals(logits, temperature=0.5, generator=_gen())
    assert abs(ids.float().mean().item() - 0.64 / 0.68) < _noise(0.64 / 0.68, n)  # p^2 renormalised
    many, conf = sample_proposals(logits[:, :10], temperature=1.0, generator=_gen(), num_samples=3)
    assert many.shape == (3, 1, 10) and conf.shape == (3, 1, 10)


def test_sample_proposals_never_draw_the_suppressed_token():
    logits = torch.log(torch.tensor([0.5, 0.1, 0.4])).view(1, 1, 3).expand(1, 20000, 3)
    ids, conf = sample_proposals(logits, temperature=1.0, generator=_gen(), suppress_token_id=0)
    assert (ids != 0).all()
    assert abs((ids == 2).float().mean().item() - 0.8) < _noise(0.8, ids.numel())
    assert torch.allclose(conf[ids == 2], torch.tensor(0.8)) and torch.allclose(conf[ids == 1], torch.tensor(0.2))


def test_sample_proposals_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        sample_proposals(torch.zeros(1, 2, 3), temperature=-1.0)


# ----- position selection -----------------------------------------------------------------------------
def test_select_update_positions_counts_clamped_per_row():
    masked = torch.tensor([[True, True, True, False, True], [False, True, False, False, False], [False] * 5])
    update = select_update_positions(masked, 3, generator=_gen())
    assert update.sum(1).tolist() == [3, 1, 0]
    assert not (update & ~masked).any()


def test_select_update_positions_by_confidence():
    masked = torch.tensor([[True, True, False, True, True]])
    confidence = torch.tensor([[0.1, 0.9, 1.0, 0.5, 0.7]])  # position 2 is the most confident but not masked
    update = select_update_positions(masked, 2, selection="confidence", confidence=confidence)
    assert update.tolist() == [[False, True, False, False, True]]


def test_select_update_positions_random_is_uniform():
    masked = torch.tensor([[True, False, True, True, True]]).expand(20000, 5)
    freq = select_update_positions(masked, 2, generator=_gen()).float().mean(0)
    assert freq[1] == 0
    assert (freq[[0, 2, 3, 4]] - 0.5).abs().max().item() < _noise(0.5, masked.shape[0])


def test_select_update_positions_bad_arguments():
    masked = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="num_update_tokens=0"):
        select_update_positions(masked, 0)
    with pytest.raises(ValueError, match="update_selection='best'"):
        select_update_positions(masked, 1, selection="best")
    with pytest.raises(ValueError, match="confidence"):
        select_update_positions(masked, 1, selection="confidence")


# ----- self-correction loss ---------------------------------------------------------------------------
def test_self_correction_loss_hand_computed():
    quality_logits = torch.tensor([[2.0, -1.0, 0.5, 7.0]])
    proposals = torch.tensor([[3, 4, 5, 6]])
    x = torch.tensor([[3, 0, 5, 0]])
    update = torch.tensor([[True, True, False, False]])  # positions 2, 3 are not filled: not part of the loss
    loss, targets = self_correction_loss(quality_logits, proposals, x, update)
    assert targets.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    bce_correct = -math.log(1 / (1 + math.exp(-2.0)))  # target 1, logit 2
    bce_wrong = -math.log(1 - 1 / (1 + math.exp(1.0)))  # target 0, logit -1
    assert loss.item() == pytest.approx((bce_correct + bce_wrong) / 2, rel=_fp32_rel(2))


def test_self_correction_loss_zero_when_nothing_filled():
    loss, _ = self_correction_loss(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long),
                                   torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0


# ----- the whole step ---------------------------------------------------------------------------------
class TableModel(torch.nn.Module):
    """Posterior logits from a fixed table per position; quality logits from a free parameter per (position, token)."""

    def __init__(self, posterior_logits, vocab=MASK + 1):
        super().__init__()
        self.posterior = torch.nn.Parameter(posterior_logits.clone())  # (L, V)
        self.quality = torch.nn.Parameter(torch.zeros(posterior_logits.shape[0], vocab))
        self.calls = []

    def forward(self, input_ids, attention_mask=None):
        self.calls.append((input_ids.clone(), torch.is_grad_enabled()))
        b, _ = input_ids.shape
        logits = self.posterior[None].expand(b, -1, -1)
        quality_logits = self.quality.gather(1, input_ids.t()).t()
        return SimpleNamespace(logits=logits, quality_logits=quality_logits)


def test_prism_step_hand_computed_greedy_confidence():
    # L=4, vocab 0..9 (9 = mask). Greedy proposals: position i proposes argmax of its table row.
    post = torch.full((4, MASK + 1), -5.0)
    post[0, 2], post[1, 3], post[2, 4], post[3, 7] = 4.0, 1.0, 3.0, 2.0
    post[:, MASK] = 10.0  # the mask token must never be proposed even when the posterior prefers it
    model = TableModel(post)
    with torch.no_grad():
        model.quality[2, 4] = 1.5
        model.quality[0, 2] = -0.5
    x = torch.tensor([[2, 3, 5, 7]])
    maskable = torch.tensor([[True, True, True, False]])  # position 3 is prompt
    gen = _gen(0)
    out = prism_step(model, x, maskable, MASK, num_update_tokens=2, update_selection="confidence",
                     proposal_temperature=0.0, eps=0.999, mdm_loss_weight=0.5, generator=gen)
    # t >= 0.999: every maskable position is masked, the prompt never is.
    assert out.masked.tolist() == [[True, True, True, False]]
    assert out.noisy_ids.tolist() == [[MASK, MASK, MASK, 7]]
    # Confidence of the greedy proposals (mask token excluded): position 0 > position 2 > position 1.
    assert out.update_mask.tolist() == [[True, False, True, False]]
    assert out.update_ids.tolist() == [[2, MASK, 4, 7]]
    # Targets: position 0 proposes 2 == x (right), position 2 proposes 4 != 5 (wrong).
    bce = (-math.log(torch.sigmoid(torch.tensor(-0.5)).item()) - math.log(1 - torch.sigmoid(torch.tensor(1.5)).item())) / 2
    assert out.self_correction_loss.item() == pytest.approx(bce, rel=_fp32_rel(2))
    logp = post.log_softmax(-1)
    t = out.t.item()
    mdm = -(logp[0, 2] + logp[1, 3] + logp[2, 5]).item() / t / 4
    terms = 4 * (MASK + 1)  # cross-entropies over the vocabulary, summed over the positions
    assert out.mdm_loss.item() == pytest.approx(mdm, rel=_fp32_rel(terms))
    assert out.loss.item() == pytest.approx(bce + 0.5 * mdm, rel=_fp32_rel(terms))
    pairs = sorted(zip(out.quality_logits[0].tolist(), out.quality_targets[0].tolist()))
    assert pairs == [(-0.5, 1.0), (1.5, 0.0)]
    # Two forwards: on z, then on y.
    assert [c[0].tolist() for c in model.calls] == [[[MASK, MASK, MASK, 7]], [[2, MASK, 4, 7]]]


def test_prism_step_frozen_backbone_first_forward_without_grad():
    model = TableModel(torch.randn(5, MASK + 1))
    x = torch.randint(0, MASK, (3, 5), generator=_gen())
    out = prism_step(model, x, torch.ones_like(x, dtype=torch.bool), MASK, num_update_tokens=2, mdm_loss_weight=3.0,
                     train_backbone=False, eps=0.5, generator=_gen())
    assert [grad for _, grad in model.calls] == [False, True]
    assert not out.mdm_loss.requires_grad
    assert out.loss.item() == pytest.approx(out.self_correction_loss.item())
    out.loss.backward()
    assert model.posterior.grad is None and model.quality.grad is not None


def test_prism_step_never_touches_disallowed_positions_and_k_clamped():
    torch.manual_seed(0)
    model = TableModel(torch.randn(12, MASK + 1))
    x = torch.randint(0, MASK, (16, 12), generator=_gen())
    maskable = torch.zeros_like(x, dtype=torch.bool)
    maskable[:, 4:9] = True  # prompt 0..3, padding 9..11
    maskable[0] = False  # a row with nothing to mask
    for selection in ("random", "confidence"):
        out = prism_step(model, x, maskable, MASK, num_update_tokens=50, num_proposals=3, update_selection=selection,
                         generator=_gen(1))
        rep_maskable = maskable.repeat(3, 1)
        assert not (out.masked & ~maskable).any()
        assert not (out.update_mask & ~rep_maskable).any()
        # k=50 > 12: every masked position is filled (clamped per row), and nothing else changed.
        assert torch.equal(out.update_mask, out.masked.repeat(3, 1))
        assert torch.equal(out.update_ids[~rep_maskable], x.repeat(3, 1)[~rep_maskable])
        # Targets exist only at filled positions.
        assert (out.quality_targets[~out.quality_valid] == 0).all()
        assert out.quality_valid.sum() == out.update_mask.sum()
        assert torch.isfinite(out.loss)


def test_prism_step_nothing_maskable_is_finite_zero():
    model = TableModel(torch.randn(4, MASK + 1))
    x = torch.randint(0, MASK, (2, 4), generator=_gen())
    out = prism_step(model, x, torch.zeros_like(x, dtype=torch.bool), MASK, num_update_tokens=2, generator=_gen())
    assert out.loss.item() == 0.0 and out.mdm_loss.item() == 0.0 and not out.quality_valid.any()


def test_prism_step_num_proposals_are_independent_copies():
    model = TableModel(torch.zeros(30, MASK + 1))
    x = torch.randint(0, MASK, (2, 30), generator=_gen())
    out = prism_step(model, x, torch.ones_like(x, dtype=torch.bool), MASK, num_update_tokens=5, num_proposals=4,
                     eps=0.9, generator=_gen())
    assert out.update_ids.shape == (8, 30) and out.quality_logits.shape == (8, 5)
    copies = out.update_mask.view(4, 2, 30)
    assert not all(torch.equal(copies[0], copies[j]) for j in range(1, 4))
    assert model.calls[1][0].shape == (8, 30)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_update_tokens": 0}, "num_update_tokens=0"), ({"num_proposals": 0}, "num_proposals=0"),
     ({"mdm_loss_weight": -1.0}, "mdm_loss_weight=-1.0"), ({"update_selection": "lowest"}, "update_selection='lowest'")],
)
def test_prism_step_bad_arguments(kwargs, match):
    model = TableModel(torch.zeros(3, MASK + 1))
    x = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=match):
        prism_step(model, x, torch.ones_like(x, dtype=torch.bool), MASK, **kwargs)


# ----- metrics ----------------------------------------------------------------------------------------
def test_binary_auroc_matches_pair_count_with_ties_and_validity():
    g = _gen(3)
    scores = torch.randint(0, 5, (200,), generator=g).float()  # many ties
    targets = (torch.rand(200, generator=g) < 0.4).float()
    valid = torch.rand(200, generator=g) < 0.8
    s, y = scores[valid], targets[valid]
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).float().sum() + 0.5 * (diff == 0).float().sum()) / (len(pos) * len(neg))
    assert binary_auroc(scores, targets, valid).item() == pytest.approx(expected.item(), rel=_fp32_rel(len(scores)))
    assert math.isnan(binary_auroc(torch.randn(5), torch.ones(5)).item())


def test_quality_accuracy():
    acc = quality_accuracy(torch.tensor([1.0, -1.0, 2.0, -3.0]), torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([True, True, True, False]))
    assert acc.item() == pytest.approx(1 / 3)


# ----- Proposition 1 in miniature ---------------------------------------------------------------------
def test_proposition_1_quality_converges_to_conditional_probability():
    """Train only a free table of quality logits with the PRISM loss on a toy distribution: it converges to
    g*(y)_i = Pr[x_i = y_i | the visible rest of y], whatever (fixed, untrained) model made the proposals."""
    torch.manual_seed(0)
    vocab, length, mask = 3, 3, 3
    joint = torch.distributions.Dirichlet(torch.full((vocab**length,), 3.0)).sample()  # p(x) over the 27 sequences
    sequences = torch.tensor(list(itertools.product(range(vocab), repeat=length)))
    proposal_logits = torch.randn(length, vocab + 1)  # an arbitrary proposal model
    table = torch.nn.Parameter(torch.zeros((vocab + 1) ** length, length))  # one quality logit per (y, i)
    powers = (vocab + 1) ** torch.arange(length)

    def model_fn(ids, attention_mask=None):
        index = (ids * powers).sum(-1)
        return SimpleNamespace(logits=proposal_logits[None].expand(ids.shape[0], -1, -1), quality_logits=table[index])

    steps = 300
    optimizer = torch.optim.Adam([table], lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    visits = torch.zeros_like(table)
    gen = _gen(0)
    for _ in range(steps):
        x = sequences[torch.multinomial(joint, 2048, replacement=True, generator=gen)]
        out = prism_step(model_fn, x, torch.ones_like(x, dtype=torch.bool), mask, num_update_tokens=1,
                         mdm_loss_weight=0.0, train_backbone=False, generator=gen)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        schedule.step()
        index = (out.update_ids * powers).sum(-1)
        visits.index_put_((index[:, None].expand(-1, length), torch.arange(length).expand_as(out.update_mask)),
                          out.update_mask.float(), accumulate=True)

    errors, weights, g_values = [], [], []
    for y in itertools.product(range(vocab + 1), repeat=length):
        y = torch.tensor(y)
        cell = int((y * powers).sum())
        for i in range(length):
            n = visits[cell, i].item()
            if y[i] == mask or n < 100:
                continue
            keep = torch.ones(len(sequences), dtype=torch.bool)
            for j in range(length):
                if j != i and y[j] != mask:
                    keep &= sequences[:, j] == y[j]
            g_star = (joint[keep & (sequences[:, i] == y[i])].sum() / joint[keep].sum()).item()
            learned = torch.sigmoid(table[cell, i]).item()
            # The head can only be as exact as the ~n samples it saw: allow 4 binomial standard errors.
            assert learned == pytest.approx(g_star, abs=0.01 + 4 * math.sqrt(g_star * (1 - g_star) / n)), (y.tolist(), i, n)
            errors.append(abs(learned - g_star))
            weights.append(n)
            g_values.append(g_star)
    assert len(errors) >= 120  # of the 144 (y, i) cells
    assert max(g_values) - min(g_values) > 0.4  # the targets really differ from cell to cell
    assert sum(e * w for e, w in zip(errors, weights)) / sum(weights) < 0.02
