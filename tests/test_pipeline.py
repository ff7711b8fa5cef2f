"""PrismPipeline: generation, infilling, blocks, batch/single equivalence, EOS, callbacks, save/load, bad input."""

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_outputs import MaskedLMOutput

from prism_hf import PrismForMaskedDiffusion
from prism_hf.pipeline_prism import PrismPipeline, PrismPipelineOutput
from prism_hf.scheduling_prism import PrismScheduler
from prism_hf.testing import tiny_bert, tiny_dream, tiny_llada, tiny_mdlm, tiny_modernbert

MASK = 63  # tiny_llada's mask id (last id of its 64-token vocabulary)
# Terms summed along a tiny test model's forward, an upper bound (2 layers of width <= 128, an MLP of 4x width,
# sequences <= 64 positions): float32 rounding differs between a padded batch and a row alone by about
# eps * sqrt(terms) relative to the size of the values.
TINY_FORWARD_TERMS = 4096


def quality_atol(quality: torch.Tensor) -> float:
    """Tolerance between two float32 computations of the same quality ``sigmoid(logit)``: the logits' rounding error,
    8 * eps * sqrt(terms) * max|logit|, times the sigmoid's largest slope 1/4."""
    logits = torch.logit(quality.double().clamp(1e-12, 1 - 1e-12))
    return 0.25 * 8 * torch.finfo(torch.float32).eps * TINY_FORWARD_TERMS ** 0.5 * logits.abs().max().item()
NO_HEAD_RULES = ["none", "random", "confidence", "remdm_cap", "remdm_rescale", "remdm_conf", "remdm_loop"]


@pytest.fixture(scope="module")
def prism_model():
    torch.manual_seed(0)
    model = PrismForMaskedDiffusion.from_backbone(tiny_llada(seed=1)).eval()
    with torch.no_grad():  # a head with spread-out outputs, so quality ranks are not near-ties
        for p in model.quality_head.parameters():
            p.normal_(0, 0.5)
    return model


def _pipe(model, **scheduler_kwargs):
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sudoku_like(batch=3, length=24, n_masks=(10, 13, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 60, (batch, length), generator=g)
    for row, n in enumerate(n_masks):
        x[row, torch.randperm(length, generator=g)[:n]] = MASK
    return x


def test_generate_with_prism(prism_model):
    pipe = _pipe(prism_model, remasking="prism", num_remask=2)
    prompt = torch.tensor([[5, 6, 7, 8]])
    out = pipe(input_ids=prompt, gen_length=16, num_inference_steps=8)
    assert isinstance(out, PrismPipelineOutput)
    assert out.sequences.shape == (1, 16) and out.sequences.dtype == torch.long
    assert not (out.sequences == MASK).any()
    assert out.quality.shape == (1, 16) and ((out.quality >= 0) & (out.quality <= 1)).all()
    assert out.nfe == 8 + 1  # 8 steps + the forward that scores the final tokens
    assert out.num_remasked.shape == (1,) and out.num_remasked.dtype == torch.long and out.num_remasked[0] > 0
    assert out.texts is None and out.history is None
    no_quality = pipe(input_ids=prompt, gen_length=16, num_inference_steps=8, return_quality=False)
    assert no_quality.nfe == 8 and no_quality.quality is None
    assert torch.equal(no_quality.sequences, out.sequences)


@pytest.mark.parametrize("remasking", NO_HEAD_RULES)
def test_plain_mdm_works_for_every_rule_without_a_head(remasking):
    pipe = _pipe(tiny_llada(), remasking=remasking, num_remask=2, unmasking="random")
    x = _sudoku_like()
    out = pipe(input_ids=x, gen_length=0, num_inference_steps=6, generator=torch.Generator().manual_seed(0))
    assert out.quality is None and out.nfe == 6
    assert not (out.sequences == MASK).any()
    given = x != MASK
    assert torch.equal(out.sequences[given], x[given])


def test_prism_on_a_plain_mdm_is_a_clear_error():
    pipe = _pipe(tiny_llada(), remasking="prism")
    with pytest.raises(ValueError, match="remasking='prism' needs a quality head"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=8, num_inference_steps=4)


@pytest.mark.parametrize("unmasking", ["random", "confidence"])
def test_sudoku_style_infilling(prism_model, unmasking):
    """Rows with different numbers of masks, 4 remasks per step, PRISM-loop steps: every blank filled, clues kept."""
    pipe = _pipe(prism_model, unmasking=unmasking, remasking="prism", num_remask=4, prism_loop_steps=3)
    x = _sudoku_like(n_masks=(10, 13, 4))
    steps = 13
    history_pipe = pipe(input_ids=x, gen_length=0, num_inference_steps=steps, return_history=True,
                        generator=torch.Generator().manual_seed(0))
    out = history_pipe
    assert out.sequences.shape == x.shape
    assert not (out.sequences == MASK).any()
    given = x != MASK
    assert torch.equal(out.sequences[given], x[given])
    assert out.nfe == steps + 3 + 1
    assert len(out.history) == steps + 3
    for entry in out.history:
        assert not (entry["remasked"] & given).any()
        assert not (entry["unmasked"] & given).any()
        assert (entry["remasked"].sum(-1) <= 4).all()
    assert (out.num_remasked == torch.stack([e["remasked"].sum(-1) for e in out.history]).sum(0)).all()
    # per-row counts: the row with 13 blanks remasks more than the row with 4
    assert out.num_remasked[1] > out.num_remasked[2]


def test_block_decoding_touches_only_the_current_block(prism_model):
    pipe = _pipe(prism_model, remasking="prism", num_remask=2)
    prompt = torch.tensor([[3, 4, 5]])
    gen_length, block = 24, 8
    out = pipe(input_ids=prompt, gen_length=gen_length, block_length=block, num_inference_steps=12, return_history=True)
    assert out.nfe == 12 + 1
    assert not (out.sequences == MASK).any()
    offset = prompt.shape[1]
    for entry in out.history:
        b = entry["block"]
        changed = entry["remasked"] | entry["unmasked"]
        cols = changed[0].nonzero().flatten()
        assert ((cols >= offset + b * block) & (cols < offset + (b + 1) * block)).all()
        assert (entry["sample"][0, :offset] == prompt[0]).all(), "prompt untouched"
        # later blocks are still fully masked while an earlier block is decoded
        assert (entry["sample"][0, offset + (b + 1) * block :] == MASK).all()
    # blocks get their share of the 12 steps: 4 each
    assert [e["block"] for e in out.history] == [0] * 4 + [1] * 4 + [2] * 4


def test_uneven_steps_are_shared_out_among_blocks(prism_model):
    pipe = _pipe(prism_model, remasking="none")
    out = pipe(input_ids=torch.tensor([[3, 4]]), gen_length=12, block_length=4, num_inference_steps=7, return_history=True)
    assert [e["block"] for e in out.history] == [0, 0, 0, 1, 1, 2, 2]
    assert not (out.sequences == MASK).any()


@pytest.mark.parametrize("remasking", ["prism", "none", "confidence", "dream-plain"])
def test_batch_equals_single_rows(prism_model, remasking):
    """Prompts of different lengths in one padded batch give, row by row, what each prompt gives alone."""
    if remasking == "dream-plain":  # Dream's 4D mask + position ids, and its logit shift, on a plain backbone
        pipe = _pipe(tiny_dream(), remasking="confidence", num_remask=2, unmasking="confidence")
    else:
        pipe = _pipe(prism_model, remasking=remasking, num_remask=2, unmasking="confidence")
    prompts = [torch.tensor([5, 6, 7, 8, 9, 10, 11]), torch.tensor([12, 13]), torch.tensor([14, 15, 16, 17])]
    kwargs = dict(gen_length=16, block_length=8, num_inference_steps=8)
    singles = [pipe(input_ids=p[None], **kwargs) for p in prompts]
    width = max(len(p) for p in prompts)
    # left-padded input, as tokenizers pad for generation
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    batch = pipe(input_ids=ids, attention_mask=mask, **kwargs)
    for i, single in enumerate(singles):
        assert torch.equal(batch.sequences[i], single.sequences[0]), i
        assert torch.equal(batch.num_remasked[i : i + 1], single.num_remasked)
        if single.quality is not None:
            assert torch.allclose(batch.quality[i], single.quality[0], rtol=0, atol=quality_atol(single.quality))
    assert batch.nfe == singles[0].nfe


class _EosLover(nn.Module):
    """A plain MDM (no registered family) that predicts EOS everywhere, most confidently at the left, in rows whose
    first token is 5, and token 7 in the other rows."""

    eos = 2

    def __init__(self):
        super().__init__()
        self.config = PretrainedConfig(mask_token_id=MASK)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        b, length = input_ids.shape
        logits = torch.zeros(b, length, 64)
        ramp = 10.0 - 0.1 * torch.arange(length, dtype=torch.float)
        eos_rows = (input_ids[:, 0] == 5)[:, None]
        logits[..., self.eos] = torch.where(eos_rows, ramp, torch.zeros_like(ramp))
        logits[..., 7] = torch.where(eos_rows, torch.zeros_like(ramp), ramp)
        return MaskedLMOutput(logits=logits)


def test_eos_early_stop():
    eos = _EosLover.eos
    pipe = _pipe(_EosLover(), remasking="none")
    out = pipe(input_ids=torch.tensor([[5, 6]]), gen_length=16, num_inference_steps=8, eos_token_id=eos, eos_early_stop=True)
    assert out.nfe == 1, "stops as soon as every row has an EOS with no mask before it"
    assert (out.sequences == eos).all()
    full = pipe(input_ids=torch.tensor([[5, 6]]), gen_length=16, num_inference_steps=8, eos_token_id=eos)
    assert full.nfe == 8


def test_eos_early_stop_freezes_finished_rows_only():
    eos = _EosLover.eos
    pipe = _pipe(_EosLover(), remasking="random", num_remask=2, unmasking="confidence")
    out = pipe(input_ids=torch.tensor([[5, 6], [4, 6]]), gen_length=16, num_inference_steps=8, eos_token_id=eos,
               eos_early_stop=True, return_history=True, generator=torch.Generator().manual_seed(0))
    assert out.nfe == 8  # row 1 never emits EOS, so the run goes on
    assert (out.sequences[0] == eos).all() and (out.sequences[1] == 7).all()
    assert out.num_remasked[0] == 0 and out.num_remasked[1] > 0  # the finished row is frozen after step 1
    for entry in out.history[1:]:
        assert not (entry["remasked"][0] | entry["unmasked"][0]).any()


def test_callback_sees_each_step_and_can_replace_tokens(prism_model):
    pipe = _pipe(prism_model, remasking="prism", num_remask=1)
    seen = []

    def callback(p, global_step, timestep, kwargs):
        seen.append((global_step, timestep, sorted(kwargs)))
        sample = kwargs["sample"].clone()
        sample[:, 0] = 42  # the prompt's first token, replaced by the callback
        return {"sample": sample}

    out = pipe(input_ids=torch.tensor([[5, 6, 7]]), gen_length=8, num_inference_steps=4, callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=["sample", "remasked"], return_history=True)
    assert [s[0] for s in seen] == [0, 1, 2, 3] and [s[1] for s in seen] == [0, 1, 2, 3]
    assert seen[0][2] == ["remasked", "sample"]
    # history holds the scheduler's tokens; the callback's tokens are what the next step starts from
    assert out.history[0]["sample"][0, 0] == 5 and out.history[1]["sample"][0, 0] == 42
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe(input_ids=torch.tensor([[5]]), gen_length=4, num_inference_steps=2, callback_on_step_end=callback,
             callback_on_step_end_tensor_inputs=["latents"])


def test_tuple_output(prism_model):
    pipe = _pipe(prism_model, remasking="prism", num_remask=1)
    seqs, quality, nfe, num_remasked, texts = pipe(input_ids=torch.tensor([[5, 6]]), gen_length=8, num_inference_steps=4,
                                                    return_dict=False)
    assert seqs.shape == (1, 8) and quality.shape == (1, 8) and nfe == 5 and num_remasked.shape == (1,) and texts is None


@pytest.mark.parametrize(
    "builder, kwargs",
    [(tiny_llada, {}), (tiny_dream, {}), (tiny_mdlm, {}), (tiny_modernbert, {}), (tiny_bert, {"mask_token_id": 63})],
)
def test_every_family_plain_and_prism(builder, kwargs):
    backbone = builder()
    prism = PrismForMaskedDiffusion.from_backbone(builder(), **kwargs)
    for model, remasking in ((backbone, "confidence"), (prism, "prism")):
        pipe = _pipe(model, remasking=remasking, num_remask=1)
        out = pipe(input_ids=torch.tensor([[5, 6, 7]]), gen_length=8, num_inference_steps=4, **kwargs)
        mask_id = kwargs.get("mask_token_id", prism.mask_token_id)
        assert not (out.sequences == mask_id).any()


def test_text_prompts_and_chat_messages(prism_model):
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(60)}
    vocab.update({"[PAD]": 60, "[EOS]": 61, "[UNK]": 62, "[MASK]": 63})
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]",
                                  mask_token="[MASK]")
    tok.chat_template = "{% for m in messages %}w1 {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w2{% endif %}"
    pipe = PrismPipeline(model=prism_model, scheduler=PrismScheduler(remasking="prism", num_remask=1), tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=["w5 w6 w7", "w8"], gen_length=8, num_inference_steps=4)
    assert len(out.texts) == 2 and all(isinstance(t, str) for t in out.texts)
    alone = pipe(prompt="w8", gen_length=8, num_inference_steps=4)
    assert torch.equal(out.sequences[1], alone.sequences[0])
    chat = pipe(messages=[{"role": "user", "content": "w5 w6"}], gen_length=8, num_inference_steps=4)
    same = pipe(input_ids=torch.tensor([[1, 5, 6, 2]]), gen_length=8, num_inference_steps=4)
    assert torch.equal(chat.sequences, same.sequences)
    seq_only = pipe(prompt="w8", gen_length=8, num_inference_steps=4, output_type="seq")
    assert seq_only.texts is None


@pytest.mark.parametrize("with_head", [True, False])
def test_save_and_load_round_trip(tmp_path, prism_model, with_head):
    model = prism_model if with_head else tiny_llada(seed=3)
    pipe = _pipe(model, remasking="prism" if with_head else "random", num_remask=2, unmasking="random", prism_loop_steps=1)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").is_file() and (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    loaded = PrismPipeline.from_pretrained(tmp_path)
    assert type(loaded.model) is type(model) and loaded.tokenizer is None
    public = lambda config: {k: v for k, v in dict(config).items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    x = _sudoku_like()
    a = pipe(input_ids=x, gen_length=0, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    b = loaded(input_ids=x, gen_length=0, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.num_remasked, b.num_remasked)
    if with_head:
        assert torch.allclose(a.quality, b.quality)


# ----- bad input ---------------------------------------------------------------------------------------------------
def test_block_length_must_divide_gen_length(prism_model):
    pipe = _pipe(prism_model)
    with pytest.raises(ValueError, match="block_length=5 must be a positive divisor of gen_length"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=16, block_length=5, num_inference_steps=4)


@pytest.mark.parametrize("steps", [0, -3])
def test_num_inference_steps_must_be_positive(prism_model, steps):
    pipe = _pipe(prism_model)
    with pytest.raises(ValueError, match=f"num_inference_steps={steps}"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=16, num_inference_steps=steps)


def test_fewer_steps_than_blocks(prism_model):
    pipe = _pipe(prism_model)
    with pytest.raises(ValueError, match="num_inference_steps=2 is fewer than the 4 blocks"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=16, block_length=4, num_inference_steps=2)


def test_prompt_longer_than_the_model_allows(prism_model):
    pipe = _pipe(prism_model)
    too_long = torch.ones(1, 250, dtype=torch.long)  # tiny_llada: 256 positions
    with pytest.raises(ValueError, match="at most 240 tokens"):
        pipe(input_ids=too_long, gen_length=16, num_inference_steps=4)


def test_remask_count_larger_than_the_block(prism_model):
    pipe = _pipe(prism_model, num_remask=9)
    with pytest.raises(ValueError, match="num_remask=9 is larger than the block"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=16, block_length=8, num_inference_steps=4)
    budget = _pipe(prism_model, remask_schedule="budget", remask_budget=20)
    with pytest.raises(ValueError, match="remask_budget=20 is larger than the block"):
        budget(input_ids=torch.tensor([[1, 2]]), gen_length=16, num_inference_steps=4)


def test_no_mask_token_id():
    backbone = tiny_bert()  # its config has no mask id
    pipe = _pipe(backbone, remasking="none")
    with pytest.raises(ValueError, match="mask_token_id=None"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=8, num_inference_steps=4)
    out = pipe(input_ids=torch.tensor([[1, 2]]), gen_length=8, num_inference_steps=4, mask_token_id=63)
    assert not (out.sequences == 63).any()


def test_other_bad_input(prism_model):
    pipe = _pipe(prism_model)
    with pytest.raises(ValueError, match="Pass one of prompt, messages or input_ids"):
        pipe(gen_length=8)
    with pytest.raises(ValueError, match="prompt / messages need a tokenizer"):
        pipe(prompt="hello", gen_length=8)
    with pytest.raises(ValueError, match="gen_length=0"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=0)
    with pytest.raises(ValueError, match="contain the mask token"):
        pipe(input_ids=torch.tensor([[1, MASK]]), gen_length=8)
    with pytest.raises(ValueError, match="output_type='pil'"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=8, output_type="pil")
    with pytest.raises(ValueError, match="gen_length=-1"):
        pipe(input_ids=torch.tensor([[1, 2]]), gen_length=-1)


def test_infilling_keeps_the_callers_layout_with_padding(prism_model):
    pipe = _pipe(prism_model, unmasking="random", remasking="prism", num_remask=2)
    x = _sudoku_like(n_masks=(10, 13, 4))
    attention = torch.ones_like(x)
    attention[2, :6] = 0  # left padding on the last row; its pad ids must come back untouched
    x[2, :6] = 0
    x[2, 2] = MASK  # a mask inside the padding is not a blank to fill
    out = pipe(input_ids=x, attention_mask=attention, gen_length=0, num_inference_steps=7,
               generator=torch.Generator().manual_seed(0))
    assert out.sequences.shape == x.shape
    keep = (x != MASK) | (attention == 0)
    assert torch.equal(out.sequences[keep], x[keep])
    assert not (out.sequences[attention.bool()] == MASK).any()


# ----- save / load with a tokenizer, and the model's loading arguments -------------------------------------------------
def _text_prism(builder):
    from prism_hf.testing import tiny_char_tokenizer

    tokenizer = tiny_char_tokenizer()
    backbone = builder(vocab_size=len(tokenizer))
    return PrismForMaskedDiffusion.from_backbone(backbone, tokenizer=tokenizer).eval(), tokenizer


@pytest.mark.parametrize("builder", [tiny_bert, tiny_mdlm])
def test_save_and_load_with_a_tokenizer(tmp_path, builder):
    """The tokenizer folder is written and loads back (diffusers saves only required or `_optional_components`)."""
    model, tokenizer = _text_prism(builder)
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(remasking="prism", num_remask=1), tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer" / "tokenizer_config.json").is_file()
    loaded = PrismPipeline.from_pretrained(tmp_path)
    assert type(loaded.tokenizer).__name__ == type(tokenizer).__name__ and len(loaded.tokenizer) == len(tokenizer)
    assert loaded.tokenizer.mask_token_id == tokenizer.mask_token_id
    kwargs = dict(prompt=["hello", "a"], gen_length=8, num_inference_steps=4, generator=None)
    a, b = pipe(**kwargs), loaded(**kwargs)
    assert a.texts == b.texts and torch.equal(a.sequences, b.sequences)


def test_from_pretrained_forwards_the_model_arguments(tmp_path, monkeypatch):
    model, tokenizer = _text_prism(tiny_bert)
    PrismPipeline(model=model, scheduler=PrismScheduler(), tokenizer=tokenizer).save_pretrained(tmp_path)
    seen = {}
    original = PrismForMaskedDiffusion.from_pretrained.__func__

    def spy(cls, path, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, path, *args, **{k: v for k, v in kwargs.items() if k != "trust_remote_code"})

    monkeypatch.setattr(PrismForMaskedDiffusion, "from_pretrained", classmethod(spy))
    loaded = PrismPipeline.from_pretrained(tmp_path, trust_remote_code=True, torch_dtype=torch.bfloat16, device_map="cpu")
    assert seen == {"trust_remote_code": True, "dtype": torch.bfloat16, "device_map": "cpu"}
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    seen.clear()
    PrismPipeline.from_pretrained(tmp_path, dtype=torch.float64)
    assert seen == {"dtype": torch.float64}
    with pytest.raises(ValueError, match="disagree"):
        PrismPipeline.from_pretrained(tmp_path, dtype=torch.float32, torch_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="apply to a model loaded from the folder"):
        PrismPipeline.from_pretrained(tmp_path, model=model, dtype=torch.float32)
    with pytest.raises(ValueError, match="has no model_index.json"):
        PrismPipeline.from_pretrained(tmp_path / "model")


# ----- more bad input ----------------------------------------------------------------------------------------------------
def test_empty_batches_are_a_clear_error(prism_model):
    pipe = _pipe(prism_model)
    with pytest.raises(ValueError, match="input_ids of shape \\(0, 3\\) is an empty batch"):
        pipe(input_ids=torch.zeros(0, 3, dtype=torch.long), gen_length=8)
    from prism_hf.testing import tiny_char_tokenizer

    with_tokenizer = PrismPipeline(model=prism_model, scheduler=PrismScheduler(), tokenizer=tiny_char_tokenizer())
    with pytest.raises(ValueError, match="prompt=\\[\\] is an empty batch"):
        with_tokenizer(prompt=[], gen_length=8)
    with pytest.raises(ValueError, match="messages=\\[\\] is an empty batch"):
        with_tokenizer(messages=[], gen_length=8)


def test_token_ids_outside_the_vocabulary(prism_model):
    pipe = _pipe(prism_model)  # tiny_llada: 64 tokens
    with pytest.raises(ValueError, match="row 1 holds token id 64, outside the model's vocabulary \\(valid ids: 0..63\\)"):
        pipe(input_ids=torch.tensor([[1, 2], [3, 64]]), gen_length=8)
    with pytest.raises(ValueError, match="token id -1"):
        pipe(input_ids=torch.tensor([[1, -1]]), gen_length=8)
    with pytest.raises(ValueError, match="token id 99"):
        pipe(input_ids=torch.tensor([[1, MASK, 99]]), gen_length=0)
