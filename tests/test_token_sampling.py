"""prism_hf.utils.token_sampling: the one token sampler of the loss and the scheduler."""

import math

import pytest
import torch

from prism_hf.utils.token_sampling import TokenDraw, sample_tokens, top_k_filter, top_p_filter

EPS32 = torch.finfo(torch.float32).eps


def _noise(p: float, n: int, sigmas: float = 4.0) -> float:
    """``sigmas`` standard errors of a frequency estimated from ``n`` independent draws of probability ``p``."""
    return sigmas * math.sqrt(p * (1 - p) / n)


def _softmax_tol(vocab: int) -> float:
    """Two float32 softmaxes of the same logits by different kernels: a few epsilons per term of the sum."""
    return 8 * EPS32 * math.sqrt(vocab)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("vocab", [12, 100])  # the short-row and the long-row paths
def test_greedy_is_the_argmax_without_the_suppressed_token(vocab):
    logits = torch.randn(2, 30, vocab, generator=_gen()) * 3
    logits[0, :, 5] = 50.0
    draw = sample_tokens(logits, temperature=0.0, suppress_token_id=5, return_probs=True)
    assert isinstance(draw, TokenDraw)
    reference = logits.index_fill(-1, torch.tensor([5]), float("-inf")).softmax(-1)
    assert torch.equal(draw.tokens, reference.argmax(-1))
    assert torch.allclose(draw.token_prob, reference.max(-1).values, rtol=0, atol=_softmax_tol(vocab))
    assert torch.allclose(draw.probs, reference, rtol=0, atol=_softmax_tol(vocab))
    assert (draw.probs[..., 5] == 0).all()


def test_draws_follow_the_tempered_posterior_renormalised_without_the_suppressed_token():
    logits = torch.log(torch.tensor([0.5, 0.1, 0.4])).view(1, 1, 3).expand(1, 20000, 3)
    draw = sample_tokens(logits, temperature=1.0, suppress_token_id=0, generator=_gen())
    n = draw.tokens.numel()
    assert (draw.tokens != 0).all()
    assert abs((draw.tokens == 2).double().mean().item() - 0.8) < _noise(0.8, n)
    assert torch.allclose(draw.token_prob[draw.tokens == 2], torch.tensor(0.8), rtol=0, atol=_softmax_tol(3))
    cold = sample_tokens(logits, temperature=0.5, suppress_token_id=0, generator=_gen())
    p = 0.16 / 0.17  # 0.4^2 / (0.4^2 + 0.1^2)
    assert abs((cold.tokens == 2).double().mean().item() - p) < _noise(p, n)


def test_confidence_source_model_is_the_untempered_unfiltered_posterior():
    logits = torch.randn(1, 400, 20, generator=_gen()) * 2
    reference = logits.softmax(-1)
    model = sample_tokens(logits, temperature=0.7, top_k=3, generator=_gen())
    assert torch.allclose(model.token_prob, reference.gather(-1, model.tokens[..., None])[..., 0], rtol=0,
                          atol=_softmax_tol(20))
    sampling = sample_tokens(logits, temperature=0.7, top_k=3, confidence_source="sampling", generator=_gen())
    assert torch.equal(sampling.tokens, model.tokens)  # the same draw; only the reported probability differs
    drawn_from = top_k_filter(logits / 0.7, 3).softmax(-1)
    assert torch.allclose(sampling.token_prob, drawn_from.gather(-1, model.tokens[..., None])[..., 0], rtol=0,
                          atol=_softmax_tol(20))


def test_the_suppressed_token_goes_before_the_filters():
    logits = torch.tensor([[[9.0, 1.0, 2.0, 0.0]]]).expand(1, 50, 4)
    draw = sample_tokens(logits, temperature=1.0, top_k=1, suppress_token_id=0, generator=_gen())
    assert (draw.tokens == 2).all()  # top-1 of what is left, not the mask's column


def test_num_samples_adds_a_leading_dimension_with_the_same_first_draw():
    logits = torch.randn(2, 9, 30, generator=_gen())
    one = sample_tokens(logits, generator=_gen(3))
    single = sample_tokens(logits, num_samples=1, generator=_gen(3))
    assert one.tokens.shape == (2, 9) and single.tokens.shape == (1, 2, 9)
    assert torch.equal(one.tokens, single.tokens[0]) and torch.equal(one.token_prob, single.token_prob[0])
    many = sample_tokens(logits, num_samples=4, generator=_gen(3))
    assert many.tokens.shape == many.token_prob.shape == (4, 2, 9)
    assert not all(torch.equal(many.tokens[0], many.tokens[i]) for i in range(1, 4))
    greedy = sample_tokens(logits, temperature=0.0, num_samples=3)
    assert greedy.tokens.shape == (3, 2, 9) and torch.equal(greedy.tokens[1], logits.argmax(-1))


def test_same_generator_same_tokens_and_the_caller_logits_stay():
    logits = torch.randn(3, 20, 50, generator=_gen()).bfloat16()
    copy = logits.clone()
    a = sample_tokens(logits, temperature=1.0, top_p=0.9, suppress_token_id=4, generator=_gen(7))
    b = sample_tokens(logits, temperature=1.0, top_p=0.9, suppress_token_id=4, generator=_gen(7))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(logits, copy)
    f32 = copy.float()
    sample_tokens(f32, temperature=2.0, suppress_token_id=4, generator=_gen(7))
    assert torch.equal(f32, copy.float())


def test_top_p_modes_keep_different_nuclei():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda mode: torch.isfinite(top_p_filter(logits, 0.9, mode))[0].tolist()  # noqa: E731
    assert kept("transformers") == [True, True, True, False]
    assert kept("mdlm") == [True, True, False, False]
    assert top_k_filter(logits, None) is logits and top_k_filter(logits, 4) is logits
    assert torch.isfinite(top_k_filter(logits, 2))[0].tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"temperature": True}, "temperature=True"),
        ({"top_k": 0}, "top_k=0"),
        ({"top_k": 2.0}, "top_k=2.0"),
        ({"top_p": 0.0}, "top_p=0.0"),
        ({"top_p": "0.9"}, "top_p='0.9'"),
        ({"top_p_mode": "hf"}, "top_p_mode='hf'"),
        ({"num_samples": 0}, "num_samples=0"),
        ({"num_samples": True}, "num_samples=True"),
        ({"confidence_source": "tempered"}, "confidence_source='tempered'"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        sample_tokens(torch.zeros(1, 2, 3), **kwargs)


def test_training_and_sampling_share_this_sampler():
    import prism_hf.sampling.scheduling_prism as scheduling

    assert scheduling.top_p_filter is top_p_filter
