"""The text recipe as the public OWT code runs it: top-p 0.9 proposals with one draw shared by the n_y copies, top-p
sampling in the public samplers' sense, and a remasking window (steps 128-256 of 256)."""

import pytest
import torch

from prism_hf.losses import prism_step, sample_proposals
from prism_hf.scheduling_prism import PrismScheduler, top_p_filter
from prism_hf.training_args import PrismTrainingArguments

VOCAB = 8


def _probs_to_logits(probs):
    return torch.tensor(probs).log()


# ----- the nucleus ---------------------------------------------------------------------------------------------------------
def test_top_p_modes():
    logits = _probs_to_logits([[0.5, 0.3, 0.15, 0.05]])
    kept = lambda mode, p: torch.isfinite(top_p_filter(logits, p, mode))[0].tolist()  # noqa: E731
    # transformers: the smallest set reaching top_p (0.5 + 0.3 = 0.8 < 0.9, so the 0.15 token that crosses stays)
    assert kept("transformers", 0.9) == [True, True, True, False]
    # mdlm / public PRISM: cumulative mass, the token itself included, at most top_p (the crossing token goes)
    assert kept("mdlm", 0.9) == [True, True, False, False]
    assert kept("mdlm", 0.8 + 1e-6) == [True, True, False, False]
    assert kept("mdlm", 0.1) == [True, False, False, False]  # the most likely token always stays
    assert kept("transformers", 1.0) == kept("mdlm", 1.0) == [True] * 4
    assert top_p_filter(logits, None) is logits
    with pytest.raises(ValueError, match="top_p_mode='hf'"):
        top_p_filter(logits, 0.9, "hf")


def test_scheduler_samples_only_inside_the_mdlm_nucleus():
    logits = _probs_to_logits([[0.5, 0.3, 0.15, 0.05]]).expand(4000, -1)[None]
    s = PrismScheduler(remasking="none", temperature=1.0, top_p=0.9, top_p_mode="mdlm")
    tokens, _, _ = s.sample_tokens(logits.clone(), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens.flatten(), minlength=4).double() / tokens.numel()
    assert freq[2] == 0 and freq[3] == 0
    # renormalised over the nucleus: 0.5 / 0.8 and 0.3 / 0.8, within 4 binomial standard deviations
    tolerance = 4 * (0.625 * 0.375 / tokens.numel()) ** 0.5
    assert abs(freq[0].item() - 0.625) < tolerance and abs(freq[1].item() - 0.375) < tolerance


# ----- proposals ----------------------------------------------------------------------------------------------------------
def test_proposals_come_from_the_top_p_nucleus():
    probs = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.03, 0.01, 0.005, 0.005])
    logits = probs.log().expand(2, 500, -1).clone()
    logits[..., 7] = 10.0  # the mask token: suppressed before the nucleus is taken
    ids, confidence = sample_proposals(logits, 1.0, torch.Generator().manual_seed(0), suppress_token_id=7, top_p=0.9)
    # without the mask token the posterior is probs[:7] renormalised; cumulative 0.403, 0.655, 0.856, 0.957: top-p 0.9
    # keeps tokens 0, 1, 2 only
    assert set(ids.unique().tolist()) == {0, 1, 2}
    renormalised = probs[:7] / probs[:7].sum()
    # the confidence stays the untempered, unfiltered posterior's (the k most confident positions are chosen by it)
    # float32 softmax over 8 logits: a few float32 epsilons (1.2e-7) of relative error per reduction
    assert torch.allclose(confidence, renormalised[ids], rtol=8 * torch.finfo(torch.float32).eps * 8 ** 0.5, atol=0)
    whole, _ = sample_proposals(logits, 1.0, torch.Generator().manual_seed(0), suppress_token_id=7)
    assert {3, 4} <= set(whole.unique().tolist())


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5, True, "0.9"])
def test_bad_top_p_is_a_clear_error(top_p):
    with pytest.raises(ValueError, match="top_p="):
        sample_proposals(torch.zeros(1, 2, 3), 1.0, top_p=top_p)
    with pytest.raises(ValueError, match="proposal_top_p="):
        prism_step(lambda ids, attention_mask=None, **kw: None, torch.zeros(1, 4, dtype=torch.long),
                   torch.ones(1, 4, dtype=torch.bool), 3, proposal_top_p=top_p)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -1.0])
def test_bad_proposal_temperature(temperature):
    with pytest.raises(ValueError, match="temperature="):
        sample_proposals(torch.zeros(1, 2, 3), temperature)


class _Recorder(torch.nn.Module):
    """A PRISM-shaped model: random posterior logits, zero quality logits; records the inputs of the forward on y."""

    def __init__(self, vocab=VOCAB):
        super().__init__()
        self.vocab = vocab
        self.calls = []

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.calls.append(input_ids.clone())
        b, length = input_ids.shape
        g = torch.Generator().manual_seed(len(self.calls))
        logits = torch.randn(b, length, self.vocab, generator=g) * 3
        return type("Out", (), {"logits": logits, "quality_logits": torch.zeros(b, length)})()


@pytest.mark.parametrize("share", [True, False])
def test_shared_proposal_draws(share):
    """One draw shared by the n_y copies (public OWT: num_x0_xt=1, num_xs_x0=4): where two copies fill the same
    position they fill it with the same token; each copy still picks its own positions."""
    model = _Recorder()
    batch, length, n_y = 3, 48, 4
    x = torch.randint(0, VOCAB - 1, (batch, length), generator=torch.Generator().manual_seed(1))
    maskable = torch.ones_like(x, dtype=torch.bool)
    out = prism_step(model, x, maskable, VOCAB - 1, num_update_tokens=8, num_proposals=n_y, eps=0.9,
                     proposal_top_p=0.9, share_proposal_draws=share, generator=torch.Generator().manual_seed(2))
    ids = out.update_ids.view(n_y, batch, length)
    filled = out.update_mask.view(n_y, batch, length)
    assert (filled.sum(-1) == 8).all()
    assert not all(torch.equal(filled[0], filled[j]) for j in range(1, n_y)), "copies pick their own positions"
    both = filled[0] & filled[1]
    assert both.any()
    same_token = (ids[0] == ids[1])[both]
    if share:
        assert same_token.all()
    else:
        assert not same_token.all()


def test_training_arguments_carry_the_text_recipe_fields():
    args = PrismTrainingArguments(output_dir="unused", proposal_top_p=0.9, share_proposal_draws=True)
    assert (args.proposal_top_p, args.share_proposal_draws) == (0.9, True)
    default = PrismTrainingArguments(output_dir="unused")
    assert (default.proposal_top_p, default.share_proposal_draws) == (None, False)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"proposal_top_p={bad}"):
            PrismTrainingArguments(output_dir="unused", proposal_top_p=bad)
    with pytest.raises(ValueError, match="proposal_temperature=inf"):
        PrismTrainingArguments(output_dir="unused", proposal_temperature=float("inf"))


# ----- the remasking window --------------------------------------------------------------------------------------------
def test_public_owt_window_remasks_only_in_the_second_half():
    """step_on=0.5 with 16 steps: remasking at steps 8..15 only (public OWT: steps 128-256 of 256)."""
    steps, length = 16, 64
    s = PrismScheduler(unmasking="random", remasking="random", remask_schedule="binomial", eta=0.5, step_on=0.5)
    x = torch.full((4, length), VOCAB - 1)
    s.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    remasked = []
    for k in s.timesteps.tolist():
        out = s.step(torch.randn(4, length, VOCAB, generator=g), k, x, mask_token_id=VOCAB - 1, generator=g)
        remasked.append(int(out.num_remasked.sum()))
        x = out.prev_sample
    assert sum(remasked[:8]) == 0 and sum(remasked[8:15]) > 0 and remasked[15] == 0
