"""Issue 15, the model core: backbone facts answered once in `prism_hf.modeling.families` (mask id, aligned forward,
maximum length, hidden size, gradient checkpointing)."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, GPT2Config, GPT2LMHeadModel, PretrainedConfig

from prism_hf import PrismForMaskedDiffusion
from prism_hf.models.cache import BlockKVCache
from prism_hf.modeling import families
from prism_hf.modeling.families import (
    MaskTokenNotFoundError,
    aligned_logits,
    enable_gradient_checkpointing,
    get_family,
    hidden_size_of,
    mask_token_id_for,
    max_length_of,
    resolve_mask_token_id,
)
from prism_hf.testing import tiny_bert, tiny_dream, tiny_llada, tiny_mdlm


class _Tokenizer:
    def __init__(self, mask_token_id):
        self.mask_token_id = mask_token_id


def _ids(vocab=60, batch=2, length=10, seed=3):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----- mask_token_id_for ----------------------------------------------------------------------------------
def test_mask_id_of_every_kind_of_model_and_config():
    mdlm = tiny_mdlm()  # its config records no mask id: the family rule gives the last vocabulary id
    assert mask_token_id_for(mdlm) == mask_token_id_for(mdlm.config) == mdlm.config.vocab_size - 1
    llada = tiny_llada(mask_token_id=7)
    assert mask_token_id_for(llada) == mask_token_id_for(llada.config) == 7
    prism = PrismForMaskedDiffusion.from_backbone(tiny_dream(), mask_token_id=5)
    # a PRISM model's recorded id wins over its backbone config's
    assert prism._raw_backbone().config.mask_token_id == 63
    assert mask_token_id_for(prism) == mask_token_id_for(prism.config) == 5
    assert mask_token_id_for(tiny_bert(), tokenizer=_Tokenizer(4)) == 4


def test_mask_id_precedence_argument_then_config_then_tokenizer_then_family_rule():
    mdlm = tiny_mdlm()
    vocab = mdlm.config.vocab_size
    assert mask_token_id_for(mdlm, tokenizer=_Tokenizer(3), mask_token_id=9) == 9
    assert mask_token_id_for(mdlm, tokenizer=_Tokenizer(3)) == 3  # the tokenizer before the family rule (as in 0.1.0)
    assert mask_token_id_for(mdlm) == vocab - 1  # the family rule when nothing else says
    mdlm.config.mask_token_id = 11
    assert mask_token_id_for(mdlm, tokenizer=_Tokenizer(3)) == 11  # what the config records before the rule
    # the older entry point answers the same, in the same order
    family = get_family("mdlm")
    assert resolve_mask_token_id(family, mdlm.config, tokenizer=_Tokenizer(3)) == 11
    assert resolve_mask_token_id(family, tiny_mdlm().config, tokenizer=_Tokenizer(3)) == 3
    assert resolve_mask_token_id(family, tiny_mdlm().config) == vocab - 1


def test_mask_id_through_peft_and_ddp_style_wrappers():
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(tiny_llada(mask_token_id=6), LoraConfig(r=2, target_modules=["q_proj"]))
    assert mask_token_id_for(wrapped) == 6

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like from outside: `.module`
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert mask_token_id_for(Wrapper(tiny_mdlm())) == 64


def test_mask_id_of_a_model_outside_the_registry():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=4, n_positions=32))
    assert mask_token_id_for(gpt2, mask_token_id=49) == 49
    assert mask_token_id_for(gpt2, tokenizer=_Tokenizer(12)) == 12
    with pytest.raises(MaskTokenNotFoundError, match=r"mask_token_id=None: .*GPT2LMHeadModel.*Pass `mask_token_id="):
        mask_token_id_for(gpt2)


def test_mask_id_errors_name_the_argument_and_what_is_valid():
    with pytest.raises(ValueError, match=r"mask_token_id=None: .*'masked-lm' backbone.*Pass `mask_token_id=<id>`"):
        mask_token_id_for(tiny_bert())
    assert issubclass(MaskTokenNotFoundError, ValueError)
    with pytest.raises(ValueError, match=r"mask_token_id=64 \(from argument mask_token_id\) is outside the vocabulary: "
                                         r"valid ids are 0..63"):
        mask_token_id_for(tiny_bert(), mask_token_id=64)
    with pytest.raises(ValueError, match=r"mask_token_id=-1 .*outside the vocabulary"):
        mask_token_id_for(tiny_bert(), tokenizer=_Tokenizer(-1))
    with pytest.raises(ValueError, match=r"mask_token_id='4' \(from argument mask_token_id\) is not valid; it must be an int"):
        mask_token_id_for(tiny_bert(), mask_token_id="4")
    with pytest.raises(ValueError, match=r"mask_token_id=True .*must be an int"):
        mask_token_id_for(tiny_bert(), mask_token_id=True)
    assert mask_token_id_for(tiny_bert(), mask_token_id=np.int64(5)) == 5  # numpy ints are ints


# ----- max_length_of, hidden_size_of ------------------------------------------------------------------------
def test_max_length_of_models_and_configs():
    assert max_length_of(tiny_bert(max_length=96)) == 96  # max_position_embeddings
    assert max_length_of(tiny_llada()) == 256  # max_sequence_length
    assert max_length_of(tiny_mdlm(model_length=48)) == 48  # model_length
    assert max_length_of(GPT2Config(n_positions=40)) == 40
    prism = PrismForMaskedDiffusion.from_backbone(tiny_mdlm(model_length=48))
    assert max_length_of(prism) == max_length_of(prism.config) == 48  # the backbone's, also from the stored config
    assert max_length_of(PretrainedConfig()) is None


def test_hidden_size_reads_a_nested_text_config():
    assert hidden_size_of(tiny_llada(d_model=48).config) == 48
    outer = PretrainedConfig()
    outer.text_config = BertConfig(hidden_size=40)
    assert hidden_size_of(outer) == 40
    assert max_length_of(outer) == 512
    outer.text_config = {"d_model": 24, "max_sequence_length": 77}  # a stored (dict) text config
    assert hidden_size_of(outer) == 24 and max_length_of(outer) == 77
    with pytest.raises(ValueError, match=r"(?i)Cannot find the hidden size .*PretrainedConfig.*Pass `hidden_size=`"):
        hidden_size_of(PretrainedConfig())


# ----- aligned_logits ------------------------------------------------------------------------------------
@pytest.mark.parametrize("builder", [tiny_llada, tiny_dream, tiny_mdlm, tiny_bert])
def test_aligned_logits_of_a_backbone_equal_the_prism_models(builder):
    backbone = builder()
    prism = PrismForMaskedDiffusion.from_backbone(backbone, mask_token_id=63).eval()
    ids = _ids()
    with torch.no_grad():
        ours = aligned_logits(backbone, ids)
        theirs = prism(ids).logits
        assert torch.equal(aligned_logits(prism, ids), theirs)
    # the same backbone, the same forward: bit-identical
    assert torch.equal(ours, theirs)


def test_aligned_logits_shift_a_shifted_family_back():
    dream = tiny_dream()
    ids = _ids()
    with torch.no_grad():
        raw = dream(input_ids=ids).logits
        ours = aligned_logits(dream, ids)
    assert torch.equal(ours[:, 1:], raw[:, :-1]) and torch.equal(ours[:, 0], raw[:, 0])


@pytest.mark.parametrize("builder", [tiny_llada, tiny_dream])
def test_aligned_logits_pass_padding_in_the_familys_convention(builder):
    model = builder()
    ids = _ids(batch=1, length=8)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    attention = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        alone = aligned_logits(model, ids)
        with_pad = aligned_logits(model, padded, attention)
    # fp32 attention over at most 12 keys, width 32: a few ulps of the logits' scale
    torch.testing.assert_close(with_pad[:, :8], alone, rtol=1e-5 * 32 ** 0.5, atol=1e-5 * 32 ** 0.5)


def test_aligned_logits_of_a_model_outside_the_registry_are_its_own():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=4, n_positions=32)).eval()
    ids = _ids(vocab=50)
    with torch.no_grad():
        assert torch.equal(aligned_logits(gpt2, ids), gpt2(input_ids=ids).logits)
    with pytest.raises(ValueError, match=r"cache=: the GPT2LMHeadModel model is outside the family registry"):
        aligned_logits(gpt2, ids, cache=BlockKVCache())


@pytest.mark.parametrize("builder", [tiny_llada, tiny_dream])
def test_aligned_logits_with_a_block_cache_match_the_prism_forward(builder):
    backbone = builder()
    prism = PrismForMaskedDiffusion.from_backbone(backbone).eval()
    ids = _ids(length=12)
    window = torch.arange(4, 8).expand(2, 4)
    with torch.no_grad():
        plain_cache, prism_cache = BlockKVCache(), BlockKVCache()
        filled = aligned_logits(backbone, ids, cache=plain_cache)
        assert torch.equal(filled, prism(ids, cache=prism_cache).logits)
        plain_cache.set_window(window)
        prism_cache.set_window(window)
        windowed = aligned_logits(backbone, ids.gather(1, window), cache=plain_cache)
        assert torch.equal(windowed, prism(ids.gather(1, window), cache=prism_cache).logits)
    assert windowed.shape == (2, 4, 64)


# ----- enable_gradient_checkpointing --------------------------------------------------------------------
def test_gradient_checkpointing_on_a_backbone_a_prism_model_and_behind_lora():
    import copy

    from peft import LoraConfig

    llada = tiny_llada()
    enable_gradient_checkpointing(llada)
    assert llada.is_activation_checkpointing

    plain = PrismForMaskedDiffusion.from_backbone(tiny_llada())
    plain.enable_lora(LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # LoRA's B starts at zero; move it so that every adapter weight gets a gradient
        for name, param in plain.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02, generator=torch.Generator().manual_seed(len(name)))
    checkpointed = copy.deepcopy(plain)
    enable_gradient_checkpointing(checkpointed, {"use_reentrant": True})
    assert checkpointed._raw_backbone().is_activation_checkpointing and not plain._raw_backbone().is_activation_checkpointing
    grads = []
    for model in (plain, checkpointed):
        model.train()
        out = model(_ids())
        (out.logits.float().logsumexp(-1).mean() + out.quality_logits.mean()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if "lora_" in n})
    # The recomputed forward is the same arithmetic: the gradients agree to fp32 rounding of a width-32 model.
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 8
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5 * 32 ** 0.5, atol=1e-7)


def test_gradient_checkpointing_refuses_a_backbone_without_it():
    with pytest.raises(ValueError, match=r"The Linear backbone does not support gradient checkpointing"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_the_old_entry_points_still_answer():
    assert families.family_for_model(PrismForMaskedDiffusion.from_backbone(tiny_llada())).name == "llada"
    assert families.vocab_size_of(tiny_llada().config) == 64


# ----- one registry helper for heads and families ---------------------------------------------------------------------
def test_head_registry_is_a_read_only_registry_with_the_old_ways_deprecated():
    from collections.abc import Mapping

    from prism_hf.modeling.heads import HEAD_REGISTRY, MLPQualityHead, QualityHead, get_head_class, register_head
    from prism_hf.utils.registry import Registry

    assert isinstance(HEAD_REGISTRY, Registry) and isinstance(HEAD_REGISTRY, Mapping)
    assert {"linear", "mlp", "transformer"} <= set(HEAD_REGISTRY) and HEAD_REGISTRY["mlp"] is MLPQualityHead

    @register_head("test-consolidation-head")
    class Head(QualityHead):
        def forward(self, hidden_states, attention_mask=None):
            return hidden_states.sum(-1)

    try:
        assert get_head_class("test-consolidation-head") is Head and Head.head_type == "test-consolidation-head"
        with pytest.raises(ValueError, match=r"quality head 'test-consolidation-head' is already registered to Head"):
            register_head("test-consolidation-head")(MLPQualityHead)
        with pytest.warns(FutureWarning, match=r"Assigning into the quality head registry is deprecated"):
            HEAD_REGISTRY["test-consolidation-head"] = MLPQualityHead  # the dict API of the previous release
        assert get_head_class("test-consolidation-head") is MLPQualityHead
    finally:
        with pytest.warns(FutureWarning, match=r"quality head registry \.pop\(name\)` is deprecated"):
            assert HEAD_REGISTRY.pop("test-consolidation-head") is MLPQualityHead
    with pytest.warns(FutureWarning):
        assert HEAD_REGISTRY.pop("test-consolidation-head", None) is None
    with pytest.raises(ValueError, match=r"head_type='nope' is not a known quality head; valid head types: \['linear'"):
        get_head_class("nope")


def test_family_registry_is_a_registry_and_registration_is_all_or_none():
    from prism_hf.modeling.families import FAMILY_REGISTRY, BackboneFamily, register_family, registered_families, replace_family
    from prism_hf.utils.registry import Registry

    assert isinstance(FAMILY_REGISTRY, Registry) and families._REGISTRY is FAMILY_REGISTRY
    copy = registered_families()
    copy.pop("llada")
    assert "llada" in FAMILY_REGISTRY  # a copy
    clash = BackboneFamily(name="clash", model_types=("test-fresh-type", "llada"))
    with pytest.raises(ValueError, match=r"model_type 'llada' is already registered to family 'llada'; pass overwrite=True"):
        register_family(clash)
    assert "test-fresh-type" not in FAMILY_REGISTRY  # nothing was registered
    original = get_family("llada")
    try:
        changed = replace_family("llada", hidden_state_module="model.transformer.blocks")
        assert get_family("llada") is changed and changed.hidden_state_module == "model.transformer.blocks"
    finally:
        register_family(original, overwrite=True)
    with pytest.raises(families.UnknownFamilyError, match=r"name='nope' is not a registered family"):
        replace_family("nope")
    with pytest.raises(families.UnknownFamilyError, match=r"model_type=None"):
        get_family(None)
