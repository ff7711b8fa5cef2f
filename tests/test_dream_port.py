"""The native Dream-v0 port (prism_hf.models.dream) against the published Dream code, on small random models.

The published code (the Hub's remote ``modeling_dream.py``, as copied in Fast-dLLM, at ``../shared/reference_models``)
is the oracle: it is imported from there through ``tests/reference_models.py`` and never copied into the project. It
does not run under transformers 5 as published; the ``published`` fixture applies the one test-only patch it needs to
build a model (``ROPE_INIT_FUNCTIONS['default']``, removed in transformers 5, restored in the oracle's module only).
The oracle's other transformers-5 failures (``from_pretrained``: RoPE ``inv_freq`` left uninitialised, its generation
config; ``save_pretrained``: its list ``_tied_weights_keys``) are avoided by building it directly and copying the
port's weights into it with ``load_state_dict(strict=True)``, which also proves that the parameter names and shapes
agree.

What cannot be checked here: the real 7B weights (no Hub access). The 7B layout is compared on the meta device.
"""

import importlib
import inspect
import json
import math
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
from reference_models import load_reference_package, requires_reference

from prism_hf.models.dream import DreamConfig, DreamModel

# The Hub's config.json of Dream-org/Dream-v0-Instruct-7B (the Base model's differs only in nothing the model reads).
HUB_CONFIG = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 152064,
}
HUB_VOCAB, HUB_MASK, HUB_PAD = 152064, 151666, 151643

# A tiny model: vocabulary 128 (mask 120), width 64, 2 layers, 4 query heads sharing 2 key/value heads.
TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, rope_theta=1e6, mask_token_id=120, pad_token_id=0,
)


def _tol(dtype: torch.dtype, *reduction_sizes: int) -> float:
    """Rounding bound for values built from sums of up to ``max(reduction_sizes)`` terms in ``dtype``: eps * sqrt(n)
    (random-walk accumulation), times 8 for the chain of layers. Relative to the largest value compared."""
    return 8 * torch.finfo(dtype).eps * math.sqrt(max(reduction_sizes))


def _assert_close(actual, expected, dtype=torch.float32, *reduction_sizes):
    tol = _tol(dtype, *reduction_sizes)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * float(expected.abs().max()))


def _kwargs(**overrides):
    return {**TINY, **overrides}


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight random (norm weights around one): the default N(0, 0.02) init and zero biases would hide most
    mistakes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=g)
            param.copy_(1.0 + 0.1 * noise if "norm" in name else 0.3 * noise)
    return model


def _port(seed: int = 0, **overrides) -> DreamModel:
    return _randomize(DreamModel(DreamConfig(**_kwargs(**overrides))), seed).eval()


def _ids(batch: int, length: int, vocab: int, mask_id: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    ids[:, 1::3] = mask_id
    return ids


# ----- the oracle ---------------------------------------------------------------------------------------------------
def _published_default_rope(config, device=None, **kwargs):
    """Test-only stand-in for transformers 4's ``ROPE_INIT_FUNCTIONS['default']`` (gone in transformers 5), which the
    published rotary embedding looks up: ``1 / rope_theta ** (2i / head_dim)`` and no attention scaling."""
    head_dim = config.hidden_size // config.num_attention_heads
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    return 1.0 / config.rope_theta**exponents, 1.0


@pytest.fixture(scope="module")
def published():
    package = load_reference_package("dream")
    modeling = importlib.import_module(f"{package.__name__}.modeling_dream")
    configuration = importlib.import_module(f"{package.__name__}.configuration_dream")
    patch = pytest.MonkeyPatch()
    # A new dict in the oracle's module only: transformers' own table stays as it is.
    patch.setattr(modeling, "ROPE_INIT_FUNCTIONS", {**modeling.ROPE_INIT_FUNCTIONS, "default": _published_default_rope})
    yield SimpleNamespace(config=configuration.DreamConfig, model=modeling.DreamModel)
    patch.undo()


def _published_config(published, **kwargs):
    with warnings.catch_warnings():  # its transformers-4 rope_scaling / rope_config_validation calls
        warnings.simplefilter("ignore", FutureWarning)
        return published.config(**kwargs)


def _pair(published, seed: int = 0, **overrides):
    """The port with random weights and the published model holding the same weights (strict state-dict copy)."""
    port = _port(seed, **overrides)
    oracle = published.model(_published_config(published, **_kwargs(**overrides))).eval()
    oracle.load_state_dict(port.state_dict(), strict=True)
    return port, oracle


# ----- configuration ------------------------------------------------------------------------------------------------
def test_config_reads_the_hub_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HUB_CONFIG))
    config = DreamConfig.from_pretrained(tmp_path)
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings", "mask_token_id", "pad_token_id", "bos_token_id",
                 "eos_token_id", "rms_norm_eps", "tie_word_embeddings", "use_cache", "max_window_layers"):
        assert getattr(config, name) == HUB_CONFIG[name], name
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 1e6} and config.rope_theta == 1e6
    assert config.head_dim == 128 and config.sliding_window is None and config.dtype == torch.bfloat16
    config.save_pretrained(tmp_path / "saved")
    assert DreamConfig.from_pretrained(tmp_path / "saved").to_dict() == config.to_dict()


@requires_reference
def test_config_defaults_are_the_published_ones(published):
    """A Hub config.json lists only values that differ from the class defaults, so the port must share them."""
    ours, theirs = DreamConfig(), _published_config(published)
    names = [n for n in inspect.signature(published.config.__init__).parameters if n not in ("self", "kwargs")]
    assert "mask_token_id" in names and "rope_theta" in names
    for name in names:
        if name == "rope_scaling":  # transformers 5 keeps it as rope_parameters (compared below)
            continue
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rope_parameters == theirs.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}


# ----- logits equal the published code ------------------------------------------------------------------------------
SHAPES = {
    # name: (config overrides, batch, length)
    "hub-vocabulary-gqa": (dict(vocab_size=HUB_VOCAB, mask_token_id=HUB_MASK, pad_token_id=HUB_PAD), 2, 12),
    "multi-head-1-layer": (dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1), 3, 7),
    "one-kv-head-3-layers": (dict(hidden_size=96, intermediate_size=128, num_attention_heads=6, num_key_value_heads=1,
                                  num_hidden_layers=3), 1, 33),
}


@requires_reference
@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_equal_the_published_code(published, shape):
    overrides, batch, length = SHAPES[shape]
    port, oracle = _pair(published, **overrides)
    config = port.config
    ids = _ids(batch, length, config.vocab_size, config.mask_token_id)
    sizes = (config.hidden_size, config.intermediate_size, length)
    with torch.no_grad():
        expected = oracle(ids).logits
        assert expected.shape == (batch, length, config.vocab_size)
        _assert_close(port(ids).logits, expected, torch.float32, *sizes)
        _assert_close(port(ids, attention_mask="full").logits, oracle(ids, "full").logits, torch.float32, *sizes)
        port.set_attn_implementation("eager")
        _assert_close(port(ids).logits, expected, torch.float32, *sizes)


@requires_reference
@pytest.mark.parametrize(
    "rope_scaling",
    [
        {"type": "linear", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 16},
    ],
    ids=lambda s: s.get("rope_type", s.get("type")),
)
def test_rope_scaling_variants_equal_the_published_code(published, rope_scaling, tmp_path):
    port, oracle = _pair(published, rope_scaling=dict(rope_scaling), rope_theta=1e4)
    ids = _ids(2, 40, 128, 120)
    assert port.model.rotary_emb.attention_scaling == oracle.model.rotary_emb.attention_scaling
    torch.testing.assert_close(port.model.rotary_emb.inv_freq, oracle.model.rotary_emb.inv_freq, rtol=0, atol=0)
    with torch.no_grad():
        expected = oracle(ids).logits
        _assert_close(port(ids).logits, expected, torch.float32, 64, 96, 40)
    port.save_pretrained(tmp_path)
    loaded = DreamModel.from_pretrained(tmp_path)
    assert loaded.config.rope_parameters == port.config.rope_parameters
    assert loaded.model.rotary_emb.attention_scaling == port.model.rotary_emb.attention_scaling
    torch.testing.assert_close(loaded.model.rotary_emb.inv_freq, port.model.rotary_emb.inv_freq, rtol=0, atol=0)
    if rope_scaling.get("type") == "linear":  # and not only as the oracle computes it: positions divided by the factor
        plain = 1.0 / 1e4 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16)
        torch.testing.assert_close(port.model.rotary_emb.inv_freq, plain / 2.0)


def _oracle_with_positions(oracle, ids, attention_mask, position_ids):
    """The published model's own modules run as the Hub's ``DreamBaseModel.forward`` runs them when given
    ``position_ids`` (embedding, one RoPE table for all layers, the layers with the mask, norm, ``lm_head``). The
    Fast-dLLM copy's forward replaces ``position_ids`` by ``0 .. L-1`` (for its caches), the Hub's passes them on."""
    hidden = oracle.model.embed_tokens(ids)
    position_embeddings = oracle.model.rotary_emb(hidden, position_ids)
    for layer in oracle.model.layers:
        hidden = layer(hidden, attention_mask=attention_mask, position_embeddings=position_embeddings)[0]
    return oracle.lm_head(oracle.model.norm(hidden))


@requires_reference
def test_padding_masks_and_position_ids_equal_the_published_code(published):
    """Dream's sampler pads on the left and passes a pairwise (B, 1, L, L) mask with positions that skip the padding.
    The port gives the published logits at every real token, with that mask or a (B, L) padding mask, under sdpa and
    eager; and each row's real tokens get the logits of the sequence run alone (padding is fully excluded)."""
    port, oracle = _pair(published)
    ids = _ids(3, 10, 128, 120)
    keep = torch.ones(3, 10, dtype=torch.bool)
    keep[0, :4] = False  # left padding
    keep[1, 7:] = False  # right padding
    pairwise = keep[:, None, :, None] & keep[:, None, None, :]
    positions = (keep.long().cumsum(-1) - 1).clamp(min=0)
    sizes = (64, 96, 10)
    with torch.no_grad():
        # Right padding only: positions are 0 .. L-1, so the published forward itself is the reference.
        right = keep.clone()
        right[0] = True
        right_pairwise = right[:, None, :, None] & right[:, None, None, :]
        expected = oracle(ids, right_pairwise).logits
        _assert_close(port(ids, right_pairwise).logits[right], expected[right], torch.float32, *sizes)
        # Left padding with positions that skip it.
        expected = _oracle_with_positions(oracle, ids, pairwise, positions)
        for implementation in ("sdpa", "eager"):
            port.set_attn_implementation(implementation)
            _assert_close(port(ids, pairwise, positions).logits[keep], expected[keep], torch.float32, *sizes)
            _assert_close(port(ids, keep.long(), positions).logits[keep], expected[keep], torch.float32, *sizes)
            additive = torch.zeros(3, 1, 10, 10).masked_fill(~pairwise, torch.finfo(torch.float32).min)
            _assert_close(port(ids, additive, positions).logits[keep], expected[keep], torch.float32, *sizes)
        for row in range(3):
            alone = port(ids[row, keep[row]][None]).logits[0]
            _assert_close(port(ids, keep, positions).logits[row, keep[row]], alone, torch.float32, *sizes)
        # RoPE only sees position differences, so positions that skip left padding give the same logits as 0 .. L-1
        # at the real tokens. Spread-out positions do not: they must reach the rotary tables as given.
        spread = positions * torch.tensor([[1], [2], [3]])
        expected = _oracle_with_positions(oracle, ids, pairwise, spread)
        assert not torch.allclose(expected[keep], port(ids, pairwise, positions).logits[keep], rtol=1e-3, atol=1e-3)
        _assert_close(port(ids, pairwise, spread).logits[keep], expected[keep], torch.float32, *sizes)


# ----- the 7B layout ------------------------------------------------------------------------------------------------
@requires_reference
def test_the_7b_checkpoint_layout_is_the_published_one(published):
    """At the real Dream-v0 7B config, on the meta device: the same state-dict keys and shapes as the published model
    (what the Hub's sharded safetensors hold), 7.6B parameters."""
    hub = {k: v for k, v in HUB_CONFIG.items() if k != "model_type"}
    with torch.device("meta"):
        port = DreamModel(DreamConfig(**hub))
        oracle = published.model(_published_config(published, **hub))
    ours = {k: tuple(v.shape) for k, v in port.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in oracle.state_dict().items()}
    assert ours == theirs and len(ours) == 28 * 12 + 3
    d, ff, kv, vocab = 3584, 18944, 4 * 128, HUB_VOCAB
    per_layer = (d * d + d) + 2 * (d * kv + kv) + d * d + 3 * d * ff + 2 * d
    expected = 2 * vocab * d + 28 * per_layer + d
    count = sum(p.numel() for p in port.parameters())
    print(f"Dream-v0 7B parameters: {count:,}")
    assert count == expected == sum(p.numel() for p in oracle.parameters())
    assert 7.6e9 < count < 7.65e9  # the Hub lists 7.62B


# ----- logit alignment and the hidden state PRISM reads -------------------------------------------------------------
@requires_reference
def test_logit_alignment_and_the_final_norm(published):
    """Neither model shifts internally: the logit at i is ``lm_head`` of the final normed state at i, in both, and
    they agree position by position, so the port keeps Dream's convention (the logit at i predicts token i + 1;
    Dream's sampler and prism_hf's ``dream`` family shift by one). ``model.norm``'s output, which PRISM's quality head
    hooks, is the published final hidden state that its ``lm_head`` reads."""
    port, oracle = _pair(published)
    ids = _ids(2, 9, 128, 120)
    captured = {}
    port.model.norm.register_forward_hook(lambda module, args, out: captured.update(port=out))
    oracle.lm_head.register_forward_pre_hook(lambda module, args: captured.update(oracle=args[0]))
    with torch.no_grad():
        ours, theirs = port(ids).logits, oracle(ids).logits
        torch.testing.assert_close(ours, port.lm_head(captured["port"]), rtol=0, atol=0)
        torch.testing.assert_close(theirs, oracle.lm_head(captured["oracle"]), rtol=0, atol=0)
        _assert_close(captured["port"], captured["oracle"], torch.float32, 64, 96)

    from prism_hf.families import get_family
    from prism_hf.modeling_prism import PrismForMaskedDiffusion

    family = get_family("dream")
    assert family.logits_shift and family.hidden_state_module == "model.norm"
    prism = PrismForMaskedDiffusion.from_backbone(port).eval()
    with torch.no_grad():
        shifted = prism(ids).logits
    torch.testing.assert_close(shifted[:, 1:], ours[:, :-1], rtol=0, atol=0)


@requires_reference
def test_hidden_states_tuples_and_embeddings_equal_the_published_code(published):
    port, oracle = _pair(published, num_hidden_layers=3)
    ids = _ids(2, 8, 128, 120)
    with torch.no_grad():
        ours = port(ids, output_hidden_states=True)
        theirs = oracle(ids, output_hidden_states=True)
        assert len(ours.hidden_states) == len(theirs.hidden_states) == 4  # each layer's input, then the final norm
        for a, b in zip(ours.hidden_states, theirs.hidden_states):
            _assert_close(a, b, torch.float32, 64, 96)
        as_tuple = port(ids, output_hidden_states=True, return_dict=False)
        assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
        torch.testing.assert_close(as_tuple[0], ours.logits, rtol=0, atol=0)
        embeds = port.get_input_embeddings()(ids)
        torch.testing.assert_close(port(inputs_embeds=embeds).logits, ours.logits, rtol=0, atol=0)
        assert port.get_output_embeddings() is port.lm_head and ours.loss is None


# ----- save / load --------------------------------------------------------------------------------------------------
def test_rope_buffers_are_right_after_save_and_load_also_sharded_and_in_bfloat16(tmp_path):
    """from_pretrained builds the model on the meta device and loads the checkpoint; the RoPE frequencies are not in
    it (non-persistent buffers) and must be recomputed. The published code leaves them uninitialised here."""
    port = _port()
    ids = _ids(2, 9, 128, 120)
    head_dim = 16
    expected_inv_freq = 1.0 / 1e6 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    with torch.no_grad():
        reference = port(ids).logits
    port.save_pretrained(tmp_path / "single")
    port.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    for folder in ("single", "sharded"):
        loaded = DreamModel.from_pretrained(tmp_path / folder)
        rotary = loaded.model.rotary_emb
        torch.testing.assert_close(rotary.inv_freq, expected_inv_freq, rtol=0, atol=0)
        torch.testing.assert_close(rotary.original_inv_freq, expected_inv_freq, rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, reference, rtol=0, atol=0)

    loaded = DreamModel.from_pretrained(tmp_path / "sharded", dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and loaded.model.rotary_emb.inv_freq.dtype == torch.float32
    torch.testing.assert_close(loaded.model.rotary_emb.inv_freq, expected_inv_freq, rtol=0, atol=0)
    with torch.no_grad():
        logits = loaded(ids).logits
    assert logits.dtype == torch.bfloat16
    _assert_close(logits.float(), reference, torch.bfloat16, 64, 96)


_LOAD_SCRIPT = r"""
import json, sys, torch
import prism_hf.models.dream
from transformers import AutoConfig, AutoModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
folder, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
report = {"registered": CONFIG_MAPPING["Dream"].__name__, "config": type(AutoConfig.from_pretrained(folder)).__name__}
for trust in (None, False):
    kwargs = {} if trust is None else {"trust_remote_code": trust}
    model = AutoModel.from_pretrained(folder, **kwargs)
    report[str(trust)] = f"{type(model).__module__}.{type(model).__name__}"
with torch.no_grad():
    report["logits"] = model(ids).logits.tolist()
model = AutoModel.from_pretrained(folder, dtype=torch.bfloat16)
with torch.no_grad():
    logits = model(ids).logits
report["bf16"] = [str(model.dtype), str(logits.dtype), bool(torch.isfinite(logits).all())]
print("REPORT" + json.dumps(report))
"""


def test_automodel_loads_the_hub_layout_without_remote_code(tmp_path):
    """A folder as the Hub has it: config.json with ``auto_map`` to remote code, the Hub's token ids, sharded
    safetensors with their index, and remote modules that raise if executed. ``AutoModel.from_pretrained(folder)``
    returns the native class without ``trust_remote_code``. A fresh interpreter, so that no other module's
    registration of ``"Dream"`` (prism_hf.testing's stand-in) interferes."""
    overrides = dict(vocab_size=HUB_VOCAB, mask_token_id=HUB_MASK, pad_token_id=HUB_PAD, hidden_size=32,
                     intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
    port = _port(**overrides)
    folder = tmp_path / "Dream-v0-Instruct-7B-layout"
    port.save_pretrained(folder, max_shard_size="10MB")
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    hub = {**HUB_CONFIG, **{k: v for k, v in overrides.items()}, "num_hidden_layers": 2, "torch_dtype": "float32"}
    (folder / "config.json").write_text(json.dumps(hub))
    for name in ("configuration_dream.py", "modeling_dream.py", "generation_utils.py"):
        (folder / name).write_text("raise ImportError('remote code must not run')\n")
    ids = _ids(2, 8, HUB_VOCAB, HUB_MASK)
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(folder), json.dumps(ids.tolist())],
        check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    native = "prism_hf.models.dream.modeling_dream.DreamModel"
    assert report["registered"] == report["config"] == "DreamConfig"
    assert report["None"] == native and report["False"] == native
    assert report["bf16"] == ["torch.bfloat16", "torch.bfloat16", True]
    with torch.no_grad():
        _assert_close(torch.tensor(report["logits"]), port(ids).logits, torch.float32, 32, 64)


def test_a_checkpoint_that_does_not_match_the_config_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from prism_hf.models.dream import DreamBaseModel

    port = _port()
    port.save_pretrained(tmp_path)
    # The base model takes a full checkpoint (its lm_head.weight has nowhere to go); the full model refuses a
    # base-only checkpoint, which has no lm_head.weight.
    base = DreamBaseModel.from_pretrained(tmp_path)
    torch.testing.assert_close(base.norm.weight, port.model.norm.weight, rtol=0, atol=0)
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match=r"does not match DreamModel.*missing_keys: \['lm_head.weight'\]"):
        DreamModel.from_pretrained(tmp_path / "base")

    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("model.layers.1.mlp.up_proj.weight")
    weights["model.layers.2.mlp.up_proj.weight"] = torch.zeros(96, 64)  # a third layer the config does not have
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing_keys: \['model.layers.1.mlp.up_proj.weight'\]; "
                                         r"unexpected_keys: \['model.layers.2.mlp.up_proj.weight'\]"):
        DreamModel.from_pretrained(tmp_path)

    weights.pop("model.layers.2.mlp.up_proj.weight")
    weights["model.layers.1.mlp.up_proj.weight"] = torch.zeros(95, 64)  # wrong shape
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        DreamModel.from_pretrained(tmp_path)
    # Asked for explicitly, the mismatched weight is re-initialised (transformers' behaviour) and reported.
    _, info = DreamModel.from_pretrained(tmp_path, ignore_mismatched_sizes=True, output_loading_info=True)
    assert [key for key, *_ in info["mismatched_keys"]] == ["model.layers.1.mlp.up_proj.weight"]


def test_tied_word_embeddings_share_the_output_projection(tmp_path):
    port = _port(tie_word_embeddings=True)
    assert port.lm_head.weight is port.model.embed_tokens.weight
    port.save_pretrained(tmp_path)
    loaded = DreamModel.from_pretrained(tmp_path)  # the checkpoint stores the shared tensor once
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    torch.testing.assert_close(loaded.lm_head.weight, port.lm_head.weight, rtol=0, atol=0)
    assert _port().lm_head.weight is not _port().model.embed_tokens.weight  # the 7B checkpoints do not tie


# ----- training -----------------------------------------------------------------------------------------------------
def _gradients(model, ids, target, checkpointing=None):
    """Gradients of a cross-entropy loss, and how often layer 0 ran (2 = recomputed in the backward pass)."""
    model.train()
    if checkpointing is not None:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": checkpointing})
    calls = []
    layer = model.get_base_model() if hasattr(model, "get_base_model") else model
    hook = layer.model.layers[0].input_layernorm.register_forward_pre_hook(lambda *args: calls.append(1))
    model.zero_grad()
    logits = model(ids).logits
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    hook.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_gives_the_same_gradients(use_reentrant):
    ids, target = _ids(2, 10, 128, 120), _ids(2, 10, 128, 120, seed=2)
    plain, runs = _gradients(_port(), ids, target)
    checkpointed, recomputed_runs = _gradients(_port(), ids, target, checkpointing=use_reentrant)
    assert runs == 1 and recomputed_runs == 2
    assert plain.keys() == checkpointed.keys() and len(plain) == len(_port().state_dict())
    for name in plain:
        _assert_close(checkpointed[name], plain[name], torch.float32, 64, 96, 20)


def test_gradient_checkpointing_under_peft_lora_on_q_k_v():
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], lora_dropout=0.0,
                      init_lora_weights=False)
    ids, target = _ids(2, 10, 128, 120), _ids(2, 10, 128, 120, seed=2)
    torch.manual_seed(3)
    plain_model = get_peft_model(_port(), lora)
    state = plain_model.state_dict()
    plain, runs = _gradients(plain_model, ids, target)
    checkpointed_model = get_peft_model(_port(), lora)
    checkpointed_model.load_state_dict(state)
    checkpointed_model.enable_input_require_grads()  # the frozen embedding would give the checkpointed layers no grad
    checkpointed, recomputed_runs = _gradients(checkpointed_model, ids, target, checkpointing=True)
    assert runs == 1 and recomputed_runs == 2
    assert len(plain) == 2 * 3 * 2 and all("lora_" in name for name in plain)  # A and B of q/k/v in both layers
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        _assert_close(checkpointed[name], plain[name], torch.float32, 64, 96, 20)


# ----- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(use_sliding_window=True), r"use_sliding_window=True: sliding-window attention is not implemented.*\[False\]"),
        (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), r"rope_type='dynamic' is not implemented.*'default', 'linear'"),
        (dict(rope_scaling={"rope_type": "longrope"}), r"rope_type='longrope' is not implemented.*'yarn', 'llama3'"),
        (dict(rope_scaling=2.0), r"rope_scaling=2.0 must be a dict"),
        (dict(rope_theta=1e4, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
         r"rope_theta=10000.0 disagrees with rope_parameters\['rope_theta'\]=1000000.0"),
        (dict(hidden_act="prelu"), r"hidden_act='prelu' is not implemented.*'silu'"),
        (dict(mask_token_id=128), r"mask_token_id=128 is outside the vocabulary; it must be an int in \[0, 127\]"),
        (dict(mask_token_id=None), r"mask_token_id=None is outside the vocabulary"),
        (dict(mask_token_id=HUB_MASK), r"mask_token_id=151666 is outside the vocabulary.*vocab_size=128"),
        (dict(pad_token_id=-1), r"pad_token_id=-1 is outside the vocabulary.*or None"),
        (dict(num_key_value_heads=3), r"num_key_value_heads=3 must divide num_attention_heads=4"),
        (dict(hidden_size=66), r"hidden_size=66 and num_attention_heads=4"),
        (dict(hidden_size=12, num_attention_heads=4, num_key_value_heads=4), r"hidden_size=12 and num_attention_heads=4"),
        (dict(num_hidden_layers=0), r"num_hidden_layers=0 must be a positive int"),
        (dict(head_dim=32), r"head_dim=32: Dream's head width is hidden_size // num_attention_heads = 16"),
        (dict(attention_bias=False), r"attention_bias=False is not implemented.*\[None, True\]"),
        (dict(use_mrope=True), r"use_mrope=True is not implemented.*\[None, False\]"),
        (dict(layer_types=["full_attention", "sliding_attention"]), r"layer_types=\['full_attention', 'sliding_attention'\]"),
        (dict(attention_dropout=1.0), r"attention_dropout=1.0 must be a float in \[0, 1\)"),
        (dict(rms_norm_eps=0.0), r"rms_norm_eps=0.0 must be a positive float"),
    ],
)
def test_unimplemented_or_invalid_config_options_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        DreamConfig(**_kwargs(**overrides))


def test_hub_variants_of_the_options_are_accepted():
    config = DreamConfig(**_kwargs(
        use_sliding_window=False, sliding_window=131072, head_dim=16, attention_bias=True, use_mrope=False,
        layer_types=["full_attention"] * 2, num_key_value_heads=None, rope_scaling={"type": "linear", "factor": 2.0},
    ))
    assert config.num_key_value_heads == 4 and config.sliding_window is None
    assert config.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}


def test_bad_forward_input_is_refused_naming_the_argument():
    port = _port()
    ids = _ids(2, 6, 128, 120)
    cases = [
        (dict(labels=ids), r"labels=a tensor of shape \(2, 6\) is not supported by the native Dream port"),
        (dict(past_key_values=[(ids, ids)]), r"cache must be a prism_hf.models.cache.BlockKVCache; got list"),
        (dict(num_logits_to_keep=3), r"num_logits_to_keep=3 is not supported.*slice the returned logits"),
        (dict(dual_cache=True), r"dual_cache=True is not supported.*BlockKVCache"),
        (dict(attention_mask="causal"), r"attention_mask='causal': the only string Dream accepts is 'full'"),
        (dict(attention_mask=torch.ones(2, 5)), r"attention_mask has shape \(2, 5\); a padding mask must have shape"),
        (dict(attention_mask=torch.ones(2, 1, 6, 5, dtype=torch.bool)), r"attention_mask has shape \(2, 1, 6, 5\)"),
        (dict(attention_mask=torch.ones(2, 3, 6, 6, dtype=torch.bool)), r"attention_mask has shape \(2, 3, 6, 6\)"),
        (dict(attention_mask=torch.ones(2, 1, 6, 6, dtype=torch.long)), r"has dtype torch.int64; a pairwise mask must"),
        (dict(position_ids=torch.arange(6)), r"position_ids has shape \(6,\); expected \(2 or 1, 6\)"),
        (dict(inputs_embeds=torch.zeros(2, 6, 64)), r"Give exactly one of input_ids and inputs_embeds"),
        (dict(output_attentions=True), r"output_attentions=True needs attn_implementation='eager'.*'sdpa'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            port(ids, **kwargs)
    with pytest.raises(ValueError, match="Give exactly one of input_ids and inputs_embeds"):
        port()
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor.*got shape \(6,\)"):
        port(ids[0])
    with torch.no_grad():  # the unported arguments at their neutral values are accepted, as upstream's defaults
        logits = port(ids, use_cache=False, past_key_values=None, labels=None, num_logits_to_keep=0).logits
        torch.testing.assert_close(logits, port(ids).logits, rtol=0, atol=0)


def test_output_attentions_with_eager():
    port = _port()
    port.set_attn_implementation("eager")
    ids = _ids(2, 6, 128, 120)
    keep = torch.tensor([[False, True, True, True, True, True], [True] * 6])
    pairwise = keep[:, None, :, None] & keep[:, None, None, :]
    with torch.no_grad():
        out = port(ids, pairwise, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 6, 6)
    for probabilities in out.attentions:
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(2, 4, 6))
        assert not probabilities[0, :, 1:, 0].any()  # no real token attends to the padding


def test_an_unavailable_attn_implementation_is_refused(tmp_path):
    config = DreamConfig(**TINY)
    with pytest.raises(ValueError, match='attn_implementation="nonsense"'):
        DreamModel._from_config(config, attn_implementation="nonsense")
    with pytest.raises(ValueError, match="does not support an attention implementation through torch's flex_attention"):
        DreamModel._from_config(DreamConfig(**TINY), attn_implementation="flex_attention")
    _port().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match='attn_implementation="nonsense"'):
        DreamModel.from_pretrained(tmp_path, attn_implementation="nonsense")
    assert DreamModel.from_pretrained(tmp_path, attn_implementation="eager").config._attn_implementation == "eager"
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        with pytest.raises(ImportError, match="FlashAttention2 has been toggled on, but it cannot be used"):
            DreamModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2")
    # Flash attention takes padding as a (B, L) mask; a pairwise mask is refused before any kernel runs.
    port = _port()
    port.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match=r"attention_mask of shape \(1, 1, 4, 4\) with attn_implementation='flash_attention_2'"):
        port(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 1, 4, 4, dtype=torch.bool))
