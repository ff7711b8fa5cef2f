"""Coming from LLaDA's generate.py: vanilla PrismPipeline reproduces LLaDA's sampler token for token (greedy, with
temperature, with classifier-free guidance), LLaDA's step counts, the untempered unmasking order, and clear errors
for LLaDA's argument names."""

import warnings

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from prism_hf.pipeline_prism import PrismPipeline
from prism_hf.scheduling_prism import PrismScheduler
from prism_hf.testing import tiny_llada

MASK = 63  # tiny_llada's mask id


def _llada_reference(model, prompt, *, steps, gen_length, block_length, mask_id, temperature=0.0, cfg_scale=0.0,
                     generator=None):
    """LLaDA's block semi-autoregressive low-confidence sampler, re-stated from the paper and generate.py's semantics.

    Per block of ``n`` masks and ``S = steps / num_blocks`` steps, step ``i`` fills ``n // S`` masks, one more on the
    first ``n % S`` steps, choosing the masked positions of the current block whose drawn token has the highest
    probability under the *untempered* posterior ``softmax(logits)``. With ``cfg_scale > 0`` the logits are
    ``uncond + (cfg_scale + 1) * (cond - uncond)``, ``uncond`` from the sequence with its prompt masked.

    Two documented differences from the published code, both in how a token is drawn, not in which positions are
    filled: the mask token is never drawn (prism_hf drops it from the posterior; LLaDA relies on the trained model
    never proposing it), and at temperature > 0 the token is drawn by inverse CDF with one uniform per masked position
    of the block (row-major), the same distribution as LLaDA's Gumbel-max with other random numbers. Using the
    pipeline's draw here makes the comparison exact; what is checked is everything else: the counts, the order,
    the blocks, the guidance and the NFE.
    """
    batch, prompt_len = prompt.shape
    x = torch.full((batch, prompt_len + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt_len] = prompt
    is_prompt = torch.zeros_like(x, dtype=torch.bool)
    is_prompt[:, :prompt_len] = True
    num_blocks = gen_length // block_length
    per_block = steps // num_blocks
    forwards = 0
    for block in range(num_blocks):
        start, end = prompt_len + block * block_length, prompt_len + (block + 1) * block_length
        n = (x[:, start:end] == mask_id).sum(-1)
        for i in range(per_block):
            count = n // per_block + (i < n % per_block).long()
            if cfg_scale > 0:
                unconditional = x.masked_fill(is_prompt, mask_id)
                both = model(input_ids=torch.cat([x, unconditional])).logits.float()
                cond, uncond = both.chunk(2)
                logits = uncond + (cfg_scale + 1) * (cond - uncond)
                forwards += 2
            else:
                logits = model(input_ids=x).logits.float()
                forwards += 1
            logits[..., mask_id] = float("-inf")
            in_block = torch.zeros_like(x, dtype=torch.bool)
            in_block[:, start:end] = True
            masked = (x == mask_id) & in_block
            if temperature == 0:
                tokens = logits.argmax(-1)
            else:
                flat = (logits[masked] / temperature).softmax(-1)
                cdf = flat.cumsum(-1)
                u = torch.rand(flat.shape[0], 1, generator=generator)
                drawn = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)
                tokens = x.masked_scatter(masked, drawn)
            confidence = logits.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
            confidence = confidence.masked_fill(~masked, float("-inf"))
            for row in range(batch):
                ranked = confidence[row].sort(descending=True).values
                k = int(count[row])
                # Exact ties at the cut (saturated float32 probabilities) would make any order "right"; the settings
                # below keep clear of them, and this says so if a change of model brings them back.
                assert k == 0 or k >= int(masked[row].sum()) or ranked[k - 1] > ranked[k], "tie at the cut"
                chosen = confidence[row].topk(k).indices
                x[row, chosen] = tokens[row, chosen]
    return x[:, prompt_len:], forwards


def _vanilla_pipe(model, **scheduler_kwargs):
    scheduler = PrismScheduler(unmasking="confidence", remasking="none", unmask_schedule="llada", **scheduler_kwargs)
    pipe = PrismPipeline(model=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _Sharpened(nn.Module):
    """A tiny LLaDA whose logits are scaled up: a random tiny model is almost uniform and hardly reads its context, so
    every order would give the same tokens; sharpened, the order, the counts and the guidance all change the result."""

    def __init__(self, inner: nn.Module, scale: float):
        super().__init__()
        self.inner, self.scale, self.config = inner, scale, inner.config

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return MaskedLMOutput(logits=self.inner(input_ids=input_ids, attention_mask=attention_mask).logits * self.scale)


@pytest.fixture(scope="module")
def model():
    return _Sharpened(tiny_llada(seed=4), scale=20.0).eval()


PROMPT = torch.tensor([[5, 9, 14, 3, 22, 7], [11, 2, 30, 8, 41, 17]])  # two rows, equal lengths, no padding


@pytest.mark.parametrize(
    "temperature, cfg_scale",
    [(0.0, 0.0), (0.0, 1.0), (0.7, 0.0), (1.3, 0.5)],
)
def test_vanilla_pipeline_reproduces_llada_generate(model, temperature, cfg_scale):
    # 30 tokens in 3 blocks of 10 with 4 steps each: 10 // 4 = 2 per step plus one on the first two steps (3, 3, 2, 2),
    # where the default ceil schedule would give 3, 2, 3, 2.
    kwargs = dict(steps=12, gen_length=30, block_length=10, mask_id=MASK, temperature=temperature, cfg_scale=cfg_scale)
    with torch.no_grad():
        expected, forwards = _llada_reference(model, PROMPT, generator=torch.Generator().manual_seed(7), **kwargs)
    pipe = _vanilla_pipe(model, temperature=temperature)
    out = pipe(input_ids=PROMPT, gen_length=30, block_length=10, num_inference_steps=12, cfg_scale=cfg_scale,
               generator=torch.Generator().manual_seed(7), output_type="seq")
    assert torch.equal(out.sequences, expected)
    assert out.nfe == forwards == 12 * (2 if cfg_scale > 0 else 1)
    assert not (out.sequences == MASK).any()


def test_the_default_schedule_is_not_llada_s_on_uneven_splits(model):
    """Without unmask_schedule='llada' the extra tokens of an uneven split go elsewhere (ceil), so runs diverge."""
    counts = {}
    for schedule in ("ceil", "llada"):
        pipe = PrismPipeline(model=model, scheduler=PrismScheduler(remasking="none", unmask_schedule=schedule))
        pipe.set_progress_bar_config(disable=True)
        out = pipe(input_ids=PROMPT[:1], gen_length=10, num_inference_steps=4, return_history=True, output_type="seq")
        counts[schedule] = [int(entry["unmasked"].sum()) for entry in out.history]
    assert counts == {"ceil": [3, 2, 3, 2], "llada": [3, 3, 2, 2]}


def test_unmasking_order_reads_the_untempered_posterior():
    """At temperature > 0 the position filled first is the one whose drawn token the model itself is surest of, not the
    one that is likeliest after temperature / top-k (LLaDA, the official PRISM sampler and Fast-dLLM)."""
    vocab = 12
    logits = torch.full((1, 2, vocab), -20.0)
    # position 0: a 60/40 split between tokens 1 and 2; position 1: token 3 alone, p ~ 0.9 (rest spread)
    logits[0, 0, 1], logits[0, 0, 2] = 0.0, -0.405
    logits[0, 1, 3] = 0.0
    logits[0, 1, 4:11] = -4.2
    x = torch.full((1, 2), 11)
    for source, first in (("model", 1), ("sampling", 0)):
        # top_k=1: after the filter every drawn token has tempered probability 1 at both positions (a tie), and the
        # untempered one is 0.6 versus 0.9.
        s = PrismScheduler(remasking="none", temperature=0.5, top_k=1, confidence_source=source)
        s.set_timesteps(2)
        out = s.step(logits, 0, x, mask_token_id=11, generator=torch.Generator().manual_seed(0))
        if source == "model":
            assert out.unmasked[0].nonzero().flatten().tolist() == [first]
            # two float32 softmaxes over 11 entries: a few epsilons per term of the normalising sum
            tolerance = 8 * torch.finfo(torch.float32).eps * 11 ** 0.5
            assert torch.allclose(out.token_confidence[0, 1], logits[0, 1, :11].softmax(-1)[3], rtol=0, atol=tolerance)
        else:
            assert out.token_confidence[0, out.unmasked[0]].item() == 1.0


# ----- LLaDA's argument names --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"steps": 8}, ["steps=8", "num_inference_steps"]),
        ({"mask_id": 126336}, ["mask_id=126336", "mask_token_id"]),
        ({"temperature": 0.5}, ["temperature=0.5", "scheduler", "PrismScheduler.from_config"]),
        ({"remasking": "low_confidence"}, ["remasking='low_confidence'", "unmasking='confidence'", "remasking='none'"]),
        ({"remasking": "random"}, ["remasking='random'", "unmasking='random'"]),
        ({"remasking": "prism"}, ["remasking='prism'", "scheduler"]),
        ({"top_p": 0.9}, ["top_p=0.9", "scheduler"]),
        ({"logits_eos_inf": True}, ["logits_eos_inf=True", "no prism_hf counterpart"]),
        ({"num_beams": 2}, ["num_beams=2", "not an argument"]),
    ],
)
def test_llada_argument_names_get_a_clear_error(model, kwargs, fragments):
    pipe = _vanilla_pipe(model)
    with pytest.raises(TypeError) as err:
        pipe(input_ids=PROMPT, gen_length=8, num_inference_steps=4, **kwargs)
    for fragment in fragments:
        assert fragment in str(err.value), (fragment, str(err.value))


def test_a_prompt_tensor_points_to_input_ids(model):
    pipe = _vanilla_pipe(model)
    with pytest.raises(ValueError, match="pass it as input_ids="):
        pipe(PROMPT, gen_length=8)


@pytest.mark.parametrize("cfg_scale", [-0.5, float("nan"), float("inf"), True, "1"])
def test_bad_cfg_scale(model, cfg_scale):
    pipe = _vanilla_pipe(model)
    with pytest.raises(ValueError, match="cfg_scale="):
        pipe(input_ids=PROMPT, gen_length=8, num_inference_steps=4, cfg_scale=cfg_scale)


def test_confidence_remasking_on_a_plain_model_warns_that_it_is_not_low_confidence(model):
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(remasking="confidence", num_remask=1))
    pipe.set_progress_bar_config(disable=True)
    with pytest.warns(UserWarning, match="not LLaDA's remasking='low_confidence'"):
        pipe(input_ids=PROMPT, gen_length=8, num_inference_steps=4)
    vanilla = _vanilla_pipe(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vanilla(input_ids=PROMPT, gen_length=8, num_inference_steps=4)
