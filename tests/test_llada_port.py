"""The native LLaDA port (prism_hf.models.llada) against the published LLaDA code, on random weights.

The published ``modeling_llada.py`` / ``configuration_llada.py`` (the Hub's remote code, as kept by Fast-dLLM) are
imported from ``../shared/reference_models/llada`` through ``tests/reference_models.py``; tests that need them skip
when that folder is absent. Under transformers 5 the published code needs test-only patches, applied here and
never in ``src``: its config loses ``use_cache`` (transformers 5 pops generation parameters that are not declared
fields), and its attention is a ``torch.compile``-d SDPA (compiling costs tens of seconds on CPU, so the plain
`torch.nn.functional.scaled_dot_product_attention` it wraps is called instead: the same function, uncompiled). A
third patch restores the Hub's call of the ``"sequential"`` block: Fast-dLLM's ``LLaDAModel.forward`` passes every
block a ``replace_position=None`` that only its llama block accepts.

What cannot be checked here: the real LLaDA-8B weights (no Hub access); the key names and shapes are compared at the
real config on the meta device instead, and the Hub's config.json is rebuilt from the published field list with
LLaDA-8B-Instruct's values. Flash attention (not installed; no GPU) is only checked for its clear error.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from prism_hf.models.llada import LLaDAConfig, LLaDAModelLM
from prism_hf.models.llada.modeling_llada import LLaDALayerNorm

from reference_models import load_reference_package, requires_reference

# LLaDA-8B-Instruct's config.json: every field of the published LLaDAConfig, with the checkpoint's values.
HUB_CONFIG = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}
#: Keys of config.json that are metadata rather than fields of the published config class.
_METADATA_KEYS = ("architectures", "auto_map", "model_type", "transformers_version")
VOCAB, MASK_ID, EOS_ID = HUB_CONFIG["vocab_size"], HUB_CONFIG["mask_token_id"], HUB_CONFIG["eos_token_id"]


def _hub_config(**overrides) -> dict:
    """The Hub's config.json shrunk to a 2-block width-32 model (Hub vocabulary and ids), with ``overrides``."""
    config = dict(HUB_CONFIG, d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, max_sequence_length=128)
    config.update(overrides)
    return config


def _small_config(**overrides) -> dict:
    """A 2-block model with a 1000-token vocabulary, for tests that do not involve the published code."""
    return _hub_config(vocab_size=1000, embedding_size=1000, mask_token_id=999, eos_token_id=998, pad_token_id=998, **overrides)


def _randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace every weight by random values (the default inits make blocks near-identities and hide mistakes):
    linear weights ~ N(0, 1/fan_in) so activations stay O(1), embeddings ~ N(0, 1), norm weights ~ 1 + N(0, 0.1^2),
    biases ~ N(0, 0.1^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.copy_(0.1 * noise)
            elif param.dim() == 1:
                param.copy_(1.0 + 0.1 * noise)
            elif "wte" in name:
                param.copy_(noise)
            else:
                param.copy_(noise / math.sqrt(param.shape[1]))
    return model


def _native(config: dict, seed: int = 0, **kwargs) -> LLaDAModelLM:
    fields = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    return _randomize_(LLaDAModelLM(LLaDAConfig(**fields, **kwargs)), seed).eval()


def _ids(batch: int, length: int, vocab: int = VOCAB, mask_id: int = MASK_ID, seed: int = 1) -> torch.Tensor:
    """Random ids over the whole vocabulary, every third position the mask token."""
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, ::3] = mask_id
    return ids


def _tolerance(dtype: torch.dtype, config: dict) -> float:
    """Relative tolerance on logits for two computations of the same network that may order floating-point sums
    differently: a few units of the dtype's epsilon times the square root of the longest reduction (a matmul over
    ``max(d_model, mlp width)`` terms), accumulated over the blocks and the output projection."""
    width = max(config["d_model"], config.get("mlp_hidden_size") or config["mlp_ratio"] * config["d_model"])
    return 4 * torch.finfo(dtype).eps * math.sqrt(width) * (config["n_layers"] + 1)


def _assert_logits_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, config: dict) -> None:
    tol = _tolerance(dtype, config)
    scale = expected.float().abs().max().item()
    torch.testing.assert_close(actual.float(), expected.float(), rtol=tol, atol=tol * scale)


# ----- the published code (test oracle) ------------------------------------------------------------------------
def _plain_sdpa(q, k, v, mask=None, attn_mask=None, dropout_p=0.0, is_causal=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)


@pytest.fixture(scope="module")
def reference():
    package = load_reference_package("llada")
    modeling = sys.modules[f"{package.__name__}.modeling_llada"]
    sequential_forward = modeling.LLaDASequentialBlock.forward

    def sequential_forward_without_replace_position(self, x, *args, replace_position=None, **kwargs):
        assert replace_position is None
        return sequential_forward(self, x, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modeling, "scaled_dot_product_attention", _plain_sdpa)
        patch.setattr(modeling.LLaDASequentialBlock, "forward", sequential_forward_without_replace_position)
        yield package


def _reference_config(reference, config: dict):
    ref_config = reference.LLaDAConfig(**{k: v for k, v in config.items() if k not in _METADATA_KEYS})
    ref_config.use_cache = config.get("use_cache", False)  # transformers 5 pops it (see the module docstring)
    return ref_config


def _reference_model(reference, config: dict, seed: int = 0):
    return _randomize_(reference.LLaDAModelLM(_reference_config(reference, config)), seed).eval()


def _native_from(reference_model, config: dict, **kwargs) -> LLaDAModelLM:
    """The native port with the published model's weights, loaded by name (strict, except the output projection
    of a weight-tied model, which the published model does not register and the port ties to ``wte``)."""
    native = LLaDAModelLM(LLaDAConfig(**{k: v for k, v in config.items() if k != "model_type"}, **kwargs)).eval()
    result = native.load_state_dict(reference_model.state_dict(), strict=False)
    expected_missing = ["model.transformer.ff_out.weight"] if config["weight_tying"] else []
    assert result.missing_keys == expected_missing and result.unexpected_keys == []
    if config["weight_tying"]:
        assert native.model.transformer.ff_out.weight is native.model.transformer.wte.weight
    return native


# ----- (a) equal logits ----------------------------------------------------------------------------------------
EQUALITY_CASES = {
    "llama-mha": dict(),
    "llama-gqa": dict(d_model=64, n_heads=8, n_kv_heads=2, n_layers=3, mlp_hidden_size=96),
    "llama-mqa-flag": dict(n_kv_heads=None, multi_query_attention=True),
    "tied-biases-scaled": dict(
        weight_tying=True, include_bias=True, bias_for_layer_norm=None, scale_logits=True, input_emb_norm=True
    ),
    "sequential-swiglu-layernorm-qknorm": dict(
        block_type="sequential", activation_type="swiglu", layer_norm_type="default", attention_layer_norm=True,
        include_qkv_bias=True, n_kv_heads=2,
    ),
    "gemma-gelu-padded-vocab": dict(
        layer_norm_type="gemma_rms", activation_type="gelu", embedding_size=VOCAB + 128, rope_theta=10000.0,
        attention_layer_norm=True, attention_layer_norm_with_affine=False, layer_norm_with_affine=False,
    ),
    "relu-no-affine": dict(activation_type="relu", layer_norm_with_affine=False, n_kv_heads=1),
}


@requires_reference
@pytest.mark.parametrize("case", list(EQUALITY_CASES))
def test_logits_equal_the_published_code(reference, case):
    config = _hub_config(**EQUALITY_CASES[case])
    ref_model = _reference_model(reference, config)
    native = _native_from(ref_model, config)
    for batch, length in ((1, 5), (3, 17)):
        ids = _ids(batch, length)
        with torch.no_grad():
            expected = ref_model(ids).logits
            actual = native(ids).logits
        assert actual.shape == expected.shape == (batch, length, config["embedding_size"])
        _assert_logits_close(actual, expected, torch.float32, config)


@requires_reference
def test_eager_attention_and_hidden_states_equal_the_published_code(reference):
    config = _hub_config(d_model=64, n_heads=8, n_kv_heads=2, mlp_hidden_size=96)
    ref_model = _reference_model(reference, config)
    native = _native_from(ref_model, config, attn_implementation="eager")
    assert native.config._attn_implementation == "eager"
    ids = _ids(2, 11)
    with torch.no_grad():
        expected = ref_model(ids, output_hidden_states=True)
        actual = native(ids, output_hidden_states=True)
    _assert_logits_close(actual.logits, expected.logits, torch.float32, config)
    # Upstream's hidden states: the input of every block, then the output of ln_f.
    assert len(actual.hidden_states) == len(expected.hidden_states) == config["n_layers"] + 1
    for got, want in zip(actual.hidden_states, expected.hidden_states):
        _assert_logits_close(got, want, torch.float32, config)


@requires_reference
@pytest.mark.parametrize("rope_full_precision", [True, False])
def test_bfloat16_logits_close_to_the_published_code(reference, rope_full_precision):
    config = _hub_config(rope_full_precision=rope_full_precision, n_kv_heads=2)
    ref_model = _reference_model(reference, config).to(torch.bfloat16)
    native = _native_from(_reference_model(reference, config), config).to(torch.bfloat16)
    ids = _ids(2, 13)
    with torch.no_grad():
        expected, actual = ref_model(ids).logits, native(ids).logits
    assert actual.dtype == expected.dtype == torch.bfloat16
    _assert_logits_close(actual, expected, torch.bfloat16, config)


# ----- (b) the real LLaDA-8B layout, on the meta device --------------------------------------------------------
def _llada_8b_parameter_count(c: dict) -> int:
    """LLaDA-8B's parameters from its config: embedding and output projection, per block four d x d attention
    projections, three d x mlp MLP projections and two norms, and the final norm."""
    d, mlp, rows = c["d_model"], c["mlp_hidden_size"], c["embedding_size"]
    return 2 * rows * d + c["n_layers"] * (4 * d * d + 3 * d * mlp + 2 * d) + d


def test_real_config_parameter_count_on_meta_device():
    with torch.device("meta"):
        model = LLaDAModelLM(LLaDAConfig(**{k: v for k, v in HUB_CONFIG.items() if k != "model_type"}))
    count = sum(p.numel() for p in model.parameters())
    print(f"native LLaDA-8B parameter count: {count:,}")
    assert count == _llada_8b_parameter_count(HUB_CONFIG) == 8_015_581_184
    assert model.model.transformer.ff_out.weight is not model.model.transformer.wte.weight  # weight_tying false


@requires_reference
def test_real_config_state_dict_matches_the_published_code(reference):
    modeling = sys.modules[f"{reference.__name__}.modeling_llada"]
    ref_config = _reference_config(reference, HUB_CONFIG)
    with torch.device("meta"):
        # The published LLaDAModelLM forces init_device="cpu" (32 GB at this size): build its inner model on meta.
        model_config = modeling.create_model_config_from_pretrained_config(ref_config)
        model_config.init_device = "meta"
        ref_model = reference.LLaDAModelLM(ref_config, model=modeling.LLaDAModel(model_config, init_params=False))
        native = LLaDAModelLM(LLaDAConfig(**{k: v for k, v in HUB_CONFIG.items() if k != "model_type"}))
    ref_shapes = {k: tuple(v.shape) for k, v in ref_model.state_dict().items()}
    native_shapes = {k: tuple(v.shape) for k, v in native.state_dict().items()}
    assert list(native_shapes) == list(ref_shapes)  # same names, same order
    assert native_shapes == ref_shapes
    count = sum(math.prod(shape) for shape in ref_shapes.values())
    print(f"published LLaDA-8B parameter count: {count:,}")
    assert count == _llada_8b_parameter_count(HUB_CONFIG)
    assert ref_shapes["model.transformer.blocks.31.ff_proj.weight"] == (12288, 4096)


# ----- (c) padding ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_padded_rows_give_the_unpadded_logits(attn_implementation):
    config = _small_config(n_kv_heads=2)
    model = _native(config, attn_implementation=attn_implementation)
    ids = _ids(2, 12, vocab=1000, mask_id=999)
    lengths = (7, 12)
    pad = config["pad_token_id"]
    right = ids.clone()
    right[0, lengths[0]:] = pad
    right_mask = (torch.arange(12)[None] < torch.tensor(lengths)[:, None]).long()
    left = torch.full_like(ids, pad)
    left[0, 12 - lengths[0]:] = ids[0, : lengths[0]]
    left[1] = ids[1]
    left_mask = right_mask.flip(-1)
    with torch.no_grad():
        alone = model(ids[:1, : lengths[0]]).logits[0]
        full = model(ids[1:]).logits[0]
        by_right = model(right, attention_mask=right_mask).logits
        by_left = model(left, attention_mask=left_mask, position_ids=(left_mask.cumsum(-1) - 1).clamp(min=0)).logits
        unmasked = model(right).logits
    for padded, real in ((by_right[0, : lengths[0]], alone), (by_left[0, 12 - lengths[0]:], alone), (by_right[1], full), (by_left[1], full)):
        _assert_logits_close(padded, real, torch.float32, config)
    # Without the mask the padding is attended to and the real tokens' logits move.
    assert not torch.allclose(unmasked[0, : lengths[0]], alone, rtol=1e-3, atol=1e-3)


def test_no_padding_masks_change_nothing_and_4d_masks_match_2d():
    config = _small_config()
    model = _native(config)
    ids = _ids(2, 9, vocab=1000, mask_id=999)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, 6:] = 0
    keep = mask.bool()
    pairwise = keep[:, None, None, :].expand(2, 1, 9, 9)
    additive = torch.zeros(2, 1, 9, 9).masked_fill(~pairwise, torch.finfo(torch.float32).min)
    with torch.no_grad():
        plain = model(ids).logits
        ones = model(ids, attention_mask=torch.ones_like(mask)).logits
        by_2d = model(ids, attention_mask=mask).logits
        by_bool = model(ids, attention_mask=pairwise).logits
        by_additive = model(ids, attention_mask=additive).logits
    assert torch.equal(plain, ones)
    _assert_logits_close(by_bool, by_2d, torch.float32, config)
    _assert_logits_close(by_additive, by_2d, torch.float32, config)


@requires_reference
def test_published_code_ignores_the_padding_mask(reference):
    """The documented deviation: upstream passes no mask to attention, so its padded rows differ from unpadded ones;
    the port agrees with it on every unpadded input."""
    config = _hub_config()
    ref_model = _reference_model(reference, config)
    native = _native_from(ref_model, config)
    ids = _ids(1, 10)
    padded = ids.clone()
    padded[0, 6:] = EOS_ID
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    with torch.no_grad():
        ref_masked = ref_model(padded, attention_mask=mask).logits
        ref_unmasked = ref_model(padded).logits
        ref_short = ref_model(ids[:, :6]).logits
        native_masked = native(padded, attention_mask=mask).logits
    assert torch.equal(ref_masked, ref_unmasked)  # the mask has no effect upstream
    assert not torch.allclose(ref_masked[0, :6], ref_short[0], rtol=1e-3, atol=1e-3)
    _assert_logits_close(native_masked[0, :6], ref_short[0], torch.float32, config)


# ----- (d) what PRISM relies on --------------------------------------------------------------------------------
def test_ln_f_output_is_the_final_hidden_state_and_qkv_are_linear():
    config = _small_config(n_kv_heads=2)
    model = _native(config)
    captured = []
    hook = model.model.transformer.ln_f.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        with torch.no_grad():
            out = model(_ids(2, 8, vocab=1000, mask_id=999), output_hidden_states=True)
    finally:
        hook.remove()
    assert len(captured) == 1 and torch.equal(captured[0], out.hidden_states[-1])
    assert isinstance(model.model.transformer.ln_f, LLaDALayerNorm)
    block = model.model.transformer.blocks[0]
    assert all(type(getattr(block, name)) is torch.nn.Linear for name in ("q_proj", "k_proj", "v_proj"))
    assert model.get_input_embeddings() is model.model.transformer.wte
    assert model.get_output_embeddings() is model.model.transformer.ff_out
    assert model(_ids(1, 4, vocab=1000, mask_id=999), return_dict=False)[0].shape == (1, 4, 1000)


def test_prism_wraps_the_port_through_the_llada_family():
    from prism_hf.modeling_prism import PrismForMaskedDiffusion

    backbone = _native(_small_config(n_kv_heads=2))
    prism = PrismForMaskedDiffusion.from_backbone(backbone).eval()
    assert prism.family.name == "llada"
    ids = _ids(2, 8, vocab=1000, mask_id=999)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    with torch.no_grad():
        out = prism(ids, attention_mask=mask)
        direct = backbone(ids, attention_mask=mask).logits
    assert torch.equal(out.logits, direct)
    assert out.quality_logits.shape == (2, 8) and torch.isfinite(out.quality_logits).all()


# ----- (e) gradient checkpointing ------------------------------------------------------------------------------
def _loss(model, ids):
    logits = model(ids).logits
    targets = torch.randint(0, logits.shape[-1], ids.shape, generator=torch.Generator().manual_seed(3))
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def _grads(model, ids) -> dict:
    model.zero_grad(set_to_none=True)
    _loss(model, ids).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def _count_block_forwards(model) -> list:
    calls = []
    model.model.transformer.blocks[0].q_proj.register_forward_hook(lambda *args: calls.append(1))
    return calls


def _assert_grads_equal(with_ckpt: dict, without: dict, config: dict) -> None:
    assert with_ckpt.keys() == without.keys() and len(without) > 0
    for name in without:
        _assert_logits_close(with_ckpt[name], without[name], torch.float32, config)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = _small_config(n_kv_heads=2)
    model = _native(config).train()
    ids = _ids(2, 10, vocab=1000, mask_id=999)
    calls = _count_block_forwards(model)
    without = _grads(model, ids)
    assert len(calls) == 1
    model.gradient_checkpointing_enable()
    calls.clear()
    with_ckpt = _grads(model, ids)
    assert len(calls) == 2  # the block ran again in the backward pass: it was checkpointed
    _assert_grads_equal(with_ckpt, without, config)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_under_peft_lora_on_qkv(use_reentrant):
    from peft import LoraConfig, get_peft_model

    config = _small_config(n_kv_heads=2)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(_native(config), lora).train()
    ids = _ids(2, 10, vocab=1000, mask_id=999)
    calls = _count_block_forwards(model.get_base_model())
    without = _grads(model, ids)
    assert len(without) == 2 * 3 * config["n_layers"] and all(".lora_" in name for name in without)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    calls.clear()
    with_ckpt = _grads(model, ids)
    assert len(calls) == 2
    _assert_grads_equal(with_ckpt, without, config)


# ----- (f) saving and loading ----------------------------------------------------------------------------------
@pytest.mark.parametrize("weight_tying", [False, True])
def test_sharded_save_and_load_round_trip(tmp_path, weight_tying):
    config = _small_config(weight_tying=weight_tying)
    model = _native(config)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    loaded = LLaDAModelLM.from_pretrained(tmp_path).eval()
    assert loaded.config._attn_implementation == "sdpa"
    if weight_tying:
        assert loaded.model.transformer.ff_out.weight is loaded.model.transformer.wte.weight
    ids = _ids(2, 9, vocab=1000, mask_id=999)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def _write_hub_folder(folder: Path, config: dict, state_dict: dict, shards: int = 2) -> Path:
    """A folder laid out like the Hub repo: the config.json as published (auto_map included) and the weights in
    ``model-0000i-of-0000n.safetensors`` shards with a ``model.safetensors.index.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    names = list(state_dict)
    weight_map, total = {}, 0
    for i in range(shards):
        shard_name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state_dict[k].contiguous() for k in names[i::shards]}
        save_file(part, folder / shard_name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard_name))
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder


def test_hub_layout_folder_loads_natively_through_the_auto_classes(tmp_path):
    config = _hub_config()
    source = _native(config)
    folder = _write_hub_folder(tmp_path / "LLaDA-8B-Instruct-tiny", config, source.state_dict())
    assert CONFIG_MAPPING["llada"] is LLaDAConfig
    loaded_config = AutoConfig.from_pretrained(folder)
    assert type(loaded_config) is LLaDAConfig
    assert loaded_config.auto_map == HUB_CONFIG["auto_map"] and loaded_config.mask_token_id == MASK_ID
    assert loaded_config.hidden_size == 32 and loaded_config.tie_word_embeddings is False and loaded_config.use_cache is False
    ids = _ids(2, 7)
    with torch.no_grad():
        expected = source(ids).logits
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
        model = auto_class.from_pretrained(folder).eval()  # no trust_remote_code
        assert type(model) is LLaDAModelLM
        with torch.no_grad():
            assert torch.equal(model(ids).logits, expected)


def test_bfloat16_load(tmp_path):
    config = _hub_config(n_kv_heads=2)
    source = _native(config)
    folder = _write_hub_folder(tmp_path / "hub", config, source.state_dict())
    model = LLaDAModelLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = _ids(2, 9)
    with torch.no_grad():
        logits = model(ids).logits
        expected = source(ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    # bf16 weights and activations against the fp32 model: the bf16 tolerance of the same network.
    _assert_logits_close(logits, expected, torch.bfloat16, config)


# ----- (g) initialisation of a fresh model ----------------------------------------------------------------------
#: Standard deviation of a normal truncated at +-3 standard deviations, relative to the untruncated one.
_TRUNCATED_STD_RATIO = math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))


@pytest.mark.parametrize("init_fn", ["mitchell", "normal", "full_megatron"])
def test_fresh_model_follows_the_published_init_fn(init_fn):
    """Upstream's ``reset_parameters`` scheme per ``init_fn`` (all truncated at 3 std here), checked on the sample
    standard deviation of every weight to within 5 standard errors (``1 / sqrt(2 n)`` relative for n samples)."""
    d, mlp, n_layers, init_std = 128, 256, 2, 0.02
    config = _small_config(
        d_model=d, n_heads=4, n_kv_heads=4, n_layers=n_layers, mlp_hidden_size=mlp, init_fn=init_fn,
        init_std=init_std, init_cutoff_factor=3.0 if init_fn == "normal" else None,
    )
    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(**{k: v for k, v in config.items() if k != "model_type"}))
    residual = init_std / math.sqrt(2 * n_layers)
    expected = {  # name -> (std of the untruncated normal) for each init_fn
        "model.transformer.wte.weight": {"mitchell": d**-0.5, "normal": init_std, "full_megatron": init_std},
        "model.transformer.ff_out.weight": {"mitchell": d**-0.5, "normal": init_std, "full_megatron": d**-0.5},
    }
    for i in range(n_layers):
        prefix = f"model.transformer.blocks.{i}."
        depth = math.sqrt(2 * (i + 1))
        for name in ("q_proj", "k_proj", "v_proj", "ff_proj", "up_proj"):
            expected[prefix + name + ".weight"] = {"mitchell": d**-0.5, "normal": init_std, "full_megatron": init_std}
        expected[prefix + "attn_out.weight"] = {"mitchell": d**-0.5 / depth, "normal": init_std, "full_megatron": residual}
        expected[prefix + "ff_out.weight"] = {"mitchell": mlp**-0.5 / depth, "normal": residual, "full_megatron": residual}
    parameters = dict(model.named_parameters())
    assert set(expected) == {name for name, p in parameters.items() if p.dim() == 2}
    for name, stds in expected.items():
        weight, sigma = parameters[name].detach(), stds[init_fn]
        relative_error = abs(weight.std().item() / (sigma * _TRUNCATED_STD_RATIO) - 1)
        assert relative_error < 5 / math.sqrt(2 * weight.numel()), (name, weight.std().item(), sigma)
        assert weight.abs().max().item() <= 3 * sigma * (1 + 1e-6), name
    assert all(torch.equal(p, torch.ones_like(p)) for name, p in parameters.items() if p.dim() == 1)


# ----- (h) bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(alibi=True), r"alibi=True .*supported values: \[False\]"),
        (dict(rope=False), r"rope=False .*supported values: \[True\]"),
        (dict(block_type="parallel"), r"block_type='parallel' .*\['llama', 'sequential'\]"),
        (dict(layer_norm_type="low_precision"), r"layer_norm_type='low_precision' .*\['default', 'rms', 'gemma_rms'\]"),
        (dict(layer_norm_type="amd_compatible"), r"layer_norm_type='amd_compatible'"),
        (dict(activation_type="swiglu"), r"activation_type='swiglu' with block_type='llama'.*\['silu', 'gelu', 'relu'\]"),
        (dict(activation_type="tanh"), r"activation_type='tanh' .*\['silu', 'gelu', 'relu', 'swiglu'\]"),
        (dict(clip_qkv=8.0), r"clip_qkv=8.0 .*supported values: \[None\]"),
        (dict(block_group_size=2), r"block_group_size=2 .*supported values: \[1\]"),
        (dict(init_fn="xavier"), r"init_fn='xavier' .*'mitchell'"),
        (dict(multi_query_attention=True), r"multi_query_attention=True and n_kv_heads=4 disagree"),
        (dict(n_kv_heads=3), r"n_kv_heads=3 must divide n_heads=4"),
        (dict(mask_token_id=VOCAB), rf"mask_token_id={VOCAB} must be None or a token id inside the vocabulary, in \[0, {VOCAB - 1}\]"),
        (dict(mask_token_id=-1), r"mask_token_id=-1 must be None or a token id"),
        (dict(eos_token_id=VOCAB + 5), rf"eos_token_id={VOCAB + 5} must be None"),
        (dict(embedding_size=VOCAB - 1), rf"embedding_size={VOCAB - 1} must be at least vocab_size={VOCAB}"),
        (dict(d_model=30), r"d_model=30 and n_heads=4"),
        (dict(d_model=12, n_heads=4, n_kv_heads=None), r"even head width"),
        (dict(n_layers=0), r"n_layers=0 must be a positive int"),
        (dict(mlp_hidden_size=-8), r"mlp_hidden_size=-8 must be a positive int or None"),
        (dict(residual_dropout=1.0), r"residual_dropout=1.0 must be a float in \[0, 1\)"),
        (dict(rms_norm_eps=0.0), r"rms_norm_eps=0.0 must be a positive float"),
    ],
)
def test_unsupported_or_invalid_config_raises(overrides, message):
    fields = {k: v for k, v in _hub_config(**overrides).items() if k != "model_type"}
    with pytest.raises(ValueError, match=message):
        LLaDAConfig(**fields)


def test_a_hub_config_json_with_an_unsupported_option_raises_on_load(tmp_path):
    folder = tmp_path / "alibi"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_hub_config(alibi=True)))
    with pytest.raises(ValueError, match=r"alibi=True"):
        AutoConfig.from_pretrained(folder)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(output_attentions=True), r"output_attentions=True is not supported"),
        (dict(past_key_values=[]), r"cache must be a prism_hf.models.cache.BlockKVCache; got list"),
        (dict(replace_position=torch.ones(1, 4)), r"replace_position is not supported.*BlockKVCache.set_window"),
        (dict(attention_bias=torch.zeros(1, 1, 4, 4)), r"attention_bias is not supported .*4D attention_mask"),
        (dict(labels=torch.zeros(1, 4, dtype=torch.long)), r"labels is not supported .*masking ratio"),
        (dict(inputs_embeds=torch.zeros(1, 4, 32)), r"exactly one of input_ids and inputs_embeds; got both"),
        (dict(attention_mask=torch.ones(1, 5)), r"attention_mask has shape \(1, 5\); expected \(1, 4\)"),
        (dict(attention_mask=torch.ones(1, 1, 4)), r"attention_mask has shape \(1, 1, 4\)"),
        (dict(position_ids=torch.arange(5)[None]), r"position_ids must be an integer tensor of shape \(1 or 1, 4\)"),
        (dict(position_ids=torch.arange(4.0)[None]), r"position_ids must be an integer tensor .*torch.float32"),
    ],
)
def test_unsupported_or_invalid_forward_arguments_raise(kwargs, message):
    model = _native(_small_config())
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 4, dtype=torch.long), **kwargs)


def test_invalid_input_ids_and_embeddings_raise():
    model = _native(_small_config())
    with pytest.raises(ValueError, match=r"exactly one of input_ids and inputs_embeds; got neither"):
        model()
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor of shape \(batch_size, seq_len\)"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"inputs_embeds must be a tensor of shape \(batch_size, seq_len, d_model=32\); got \(1, 4, 16\)"):
        model(inputs_embeds=torch.zeros(1, 4, 16))


def test_4d_mask_with_flash_attention_raises():
    model = _native(_small_config())
    model.config._attn_implementation = "flash_attention_2"  # only the mask check runs: it raises before attention
    with pytest.raises(ValueError, match=r"4D attention_mask cannot be used with attn_implementation='flash_attention_2'"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 1, 4, 4, dtype=torch.bool))


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys(tmp_path):
    config = _small_config()
    state_dict = _native(config).state_dict()
    # Config with three blocks, weights for two: block 2 is missing.
    deeper = _write_hub_folder(tmp_path / "deeper", dict(config, n_layers=3), state_dict)
    with pytest.raises(ValueError, match=r"missing_keys .*model\.transformer\.blocks\.2\.attn_norm\.weight") as error:
        LLaDAModelLM.from_pretrained(deeper)
    assert "refusing to initialise weights at random" in str(error.value)
    # A key the config does not know, and one missing from the checkpoint.
    extra = dict(state_dict)
    extra["model.transformer.blocks.0.extra_proj.weight"] = torch.zeros(2, 2)
    del extra["model.transformer.blocks.1.up_proj.weight"]
    odd = _write_hub_folder(tmp_path / "odd", config, extra)
    with pytest.raises(ValueError, match=r"unexpected_keys .*blocks\.0\.extra_proj\.weight") as error:
        AutoModel.from_pretrained(odd)
    assert "1 missing_keys" in str(error.value) and "blocks.1.up_proj.weight" in str(error.value)
    # A matching checkpoint still reports its (empty) loading info on request.
    good = _write_hub_folder(tmp_path / "good", config, state_dict)
    _, info = LLaDAModelLM.from_pretrained(good, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize(
    "attn_implementation, error, message",
    [
        ("flash_attention_2", ImportError, r"FlashAttention2 .*doesn't seem to be installed"),
        ("flex_attention", ValueError, r"does not support an attention implementation through torch's flex_attention"),
        ("bogus", ValueError, r'attn_implementation="bogus"` is not supported'),
    ],
)
def test_unavailable_attention_implementation_raises(tmp_path, attn_implementation, error, message):
    if attn_implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401

            pytest.skip("flash-attn is installed here")
        except ImportError:
            pass
    model = _native(_small_config())
    model.save_pretrained(tmp_path)
    with pytest.raises(error, match=message):
        LLaDAModelLM.from_pretrained(tmp_path, attn_implementation=attn_implementation)
    with pytest.raises(error, match=message):
        LLaDAModelLM(LLaDAConfig(**{k: v for k, v in _small_config().items() if k != "model_type"}, attn_implementation=attn_implementation))
