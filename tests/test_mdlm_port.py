"""The native MDLM port (prism_hf.models.mdlm): checkpoint key layout, upstream math, loading, PRISM on top.

What cannot be checked here: equality with the real ``kuleshov-group/mdlm-owt`` weights and remote code (no Hub,
no flash-attn, no GPU). The upstream math is re-derived below from a reading of its modeling file and compared
with the port on small random models.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import datasets
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from prism_hf.families import get_family
from prism_hf.modeling_prism import PrismForMaskedDiffusion
from prism_hf.pipeline_prism import PrismPipeline
from prism_hf.scheduling_prism import PrismScheduler
from prism_hf.trainer import PrismTrainer
from prism_hf.training_args import PrismTrainingArguments

from prism_hf.models.mdlm import MDLMConfig, MDLMForMaskedLM  # noqa: E402


def test_importing_prism_hf_registers_the_native_port():
    assert CONFIG_MAPPING["mdlm"] is MDLMConfig
    from transformers import AutoModelForMaskedLM

    assert type(AutoModelForMaskedLM.from_config(_config())) is MDLMForMaskedLM
    from prism_hf.testing import tiny_mdlm

    assert type(tiny_mdlm()) is MDLMForMaskedLM


VOCAB, HIDDEN, COND, HEADS, BLOCKS, LENGTH = 65, 32, 16, 4, 2, 64
MASK = VOCAB - 1


def _config(**overrides):
    kwargs = dict(vocab_size=VOCAB, hidden_dim=HIDDEN, cond_dim=COND, n_blocks=BLOCKS, n_heads=HEADS, model_length=LENGTH)
    kwargs.update(overrides)
    return MDLMConfig(**kwargs)


def _model(seed=0, **overrides):
    """A small port with every weight random (upstream's adaLN-Zero init would make the blocks identities and the
    logits zero, which hides most mistakes)."""
    torch.manual_seed(seed)
    model = MDLMForMaskedLM(_config(**overrides)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * 0.3 + (1.0 if "norm" in name else 0.0))
    return model


def _fp32_atol(reference: torch.Tensor, reduction_terms: int, safety: float = 8.0) -> float:
    """Absolute tolerance for comparing two float32 computations of ``reference`` that sum in different orders
    (another kernel, batch size, thread count or CPU). Rounding errors accumulate like a random walk: about
    ``eps * sqrt(n)`` relative to the size of the values after ``n`` summed terms along the computation. ``safety``
    covers the layer norms, softmaxes and residual sums on the way (which rescale errors by O(1) factors), so the
    bound holds on any x86-64 CPU while a wrong formula (an O(1) error) still fails by orders of magnitude."""
    return safety * torch.finfo(torch.float32).eps * math.sqrt(reduction_terms) * reference.abs().max().item()


def _reduction_terms(length: int) -> int:
    """Terms summed along the deepest path of one forward of the `_model` config with ``length`` positions: the time
    embedding MLP (256 frequencies, then COND), per block two layer norms, the qkv projection, the attention scores
    (head dim) and their weighted sum (length), the output projection and the MLP (HIDDEN then 4 * HIDDEN), then
    the final norm and the vocabulary projection."""
    per_block = 2 * HIDDEN + HIDDEN + HIDDEN // HEADS + length + HIDDEN + HIDDEN + 4 * HIDDEN
    return 256 + COND + BLOCKS * per_block + 2 * HIDDEN


def _ids(batch=3, length=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB - 1, (batch, length), generator=g)
    ids[:, ::3] = MASK
    return ids


# ----- (a) the checkpoint's state-dict layout ---------------------------------------------------------------
def _expected_keys(v=VOCAB, h=HIDDEN, c=COND, heads=HEADS):
    """Keys and shapes of upstream's ``MDLM(config).state_dict()`` for two blocks, written out from its modules:
    ``EmbeddingLayer.embedding``, ``TimestepEmbedder.mlp`` (256 sinusoidal features -> cond -> cond), the persistent
    ``Rotary.inv_freq`` buffer (head_dim / 2), per block two weight-only LayerNorms, ``attn_qkv`` / ``attn_out``
    without bias, an MLP of width 4h with biases and a 6h adaLN projection; the final layer's LayerNorm, vocabulary
    projection and 2h adaLN projection."""
    keys = {
        "backbone.vocab_embed.embedding": (v, h),
        "backbone.sigma_map.mlp.0.weight": (c, 256),
        "backbone.sigma_map.mlp.0.bias": (c,),
        "backbone.sigma_map.mlp.2.weight": (c, c),
        "backbone.sigma_map.mlp.2.bias": (c,),
        "backbone.rotary_emb.inv_freq": (h // heads // 2,),
    }
    for i in range(2):
        p = f"backbone.blocks.{i}."
        keys.update({
            p + "norm1.weight": (h,),
            p + "attn_qkv.weight": (3 * h, h),
            p + "attn_out.weight": (h, h),
            p + "norm2.weight": (h,),
            p + "mlp.0.weight": (4 * h, h),
            p + "mlp.0.bias": (4 * h,),
            p + "mlp.2.weight": (h, 4 * h),
            p + "mlp.2.bias": (h,),
            p + "adaLN_modulation.weight": (6 * h, c),
            p + "adaLN_modulation.bias": (6 * h,),
        })
    keys.update({
        "backbone.output_layer.norm_final.weight": (h,),
        "backbone.output_layer.linear.weight": (v, h),
        "backbone.output_layer.linear.bias": (v,),
        "backbone.output_layer.adaLN_modulation.weight": (2 * h, c),
        "backbone.output_layer.adaLN_modulation.bias": (2 * h,),
    })
    return keys


def test_state_dict_keys_and_shapes_are_upstreams():
    model = MDLMForMaskedLM(_config())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _expected_keys()
    # A state dict with exactly upstream's keys loads strictly (what the Hub's model.safetensors needs).
    g = torch.Generator().manual_seed(0)
    upstream_like = {k: torch.randn(shape, generator=g) for k, shape in _expected_keys().items()}
    model.load_state_dict(upstream_like, strict=True)
    assert torch.equal(model.backbone.blocks[1].attn_qkv.weight, upstream_like["backbone.blocks.1.attn_qkv.weight"])


def test_fresh_model_has_upstreams_init():
    """adaLN-Zero: modulations and the output projection start at zero; norms at one; rotary frequencies exact."""
    model = MDLMForMaskedLM(_config())
    zero = [n for n, p in model.named_parameters() if "adaLN_modulation" in n or "output_layer.linear" in n]
    assert len(zero) == 2 * BLOCKS + 4 and all(not model.get_parameter(n).any() for n in zero)
    assert all(torch.equal(p, torch.ones_like(p)) for n, p in model.named_parameters() if "norm" in n)
    head_dim = HIDDEN // HEADS
    expected = 1.0 / 10_000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    torch.testing.assert_close(model.backbone.rotary_emb.inv_freq, expected, rtol=0, atol=0)
    w = model.backbone.blocks[0].attn_qkv.weight
    assert 0.5 / math.sqrt(HIDDEN) < w.std() < 1.0 / math.sqrt(HIDDEN)  # PyTorch's default Linear init, not N(0, 0.02)
    assert not model(_ids(), torch.zeros(3)).any()


# ----- (b) the forward against a plain re-derivation of upstream's math ----------------------------------
def _layer_norm(x, weight):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _reference_forward(sd, config, ids, timesteps):
    """Upstream's DITBackbone.forward written out with plain tensor ops (flash-attn's half-table rotary, explicit
    softmax attention), returning logits and the final norm's output."""
    h, heads = config.hidden_dim, config.n_heads
    hd = h // heads
    b, l = ids.shape
    t = timesteps if config.time_conditioning else torch.zeros_like(timesteps)
    half = 128
    freqs = torch.exp(-math.log(10_000) * torch.arange(half).float() / half)
    args = t[:, None].float() * freqs[None]
    feats = torch.cat([torch.cos(args), torch.sin(args)], -1)
    s = "backbone.sigma_map.mlp."
    c = F.silu(F.silu(feats @ sd[s + "0.weight"].T + sd[s + "0.bias"]) @ sd[s + "2.weight"].T + sd[s + "2.bias"])

    inv = 1.0 / 10_000 ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.arange(l).float()[:, None] * inv[None]  # (L, hd/2)
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]

    def rot(x):  # (B, L, heads, hd): first half against second half
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    x = sd["backbone.vocab_embed.embedding"][ids]
    for i in range(config.n_blocks):
        p = f"backbone.blocks.{i}."
        mod = (c @ sd[p + "adaLN_modulation.weight"].T + sd[p + "adaLN_modulation.bias"])[:, None]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.split(h, dim=-1)
        y = _layer_norm(x, sd[p + "norm1.weight"]) * (1 + scale1) + shift1
        qkv = (y @ sd[p + "attn_qkv.weight"].T).reshape(b, l, 3, heads, hd)
        q, k, v = rot(qkv[:, :, 0]), rot(qkv[:, :, 1]), qkv[:, :, 2]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        att = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, l, h)
        x = x + gate1 * (att @ sd[p + "attn_out.weight"].T)
        y = _layer_norm(x, sd[p + "norm2.weight"]) * (1 + scale2) + shift2
        y = _gelu_tanh(y @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"]) @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"]
        x = x + gate2 * y
    o = "backbone.output_layer."
    shift, scale = (c @ sd[o + "adaLN_modulation.weight"].T + sd[o + "adaLN_modulation.bias"])[:, None].split(h, dim=-1)
    normed = _layer_norm(x, sd[o + "norm_final.weight"])
    logits = (normed * (1 + scale) + shift) @ sd[o + "linear.weight"].T + sd[o + "linear.bias"]
    return logits, normed


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_forward_matches_the_reference_math(time_conditioning):
    model = _model(time_conditioning=time_conditioning)
    ids, t = _ids(), torch.tensor([0.1, 0.5, 0.9])
    captured = {}
    model.backbone.output_layer.norm_final.register_forward_hook(lambda m, a, out: captured.update(norm=out))
    with torch.no_grad():
        logits = model(ids, t)
        expected, normed = _reference_forward(model.state_dict(), model.config, ids, t)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 12, VOCAB)
    terms = _reduction_terms(ids.shape[1])
    torch.testing.assert_close(logits, expected, rtol=0, atol=_fp32_atol(expected, terms))
    torch.testing.assert_close(captured["norm"], normed, rtol=0, atol=_fp32_atol(normed, terms - HIDDEN))


def test_timesteps_are_ignored_without_time_conditioning_and_used_with_it():
    ids = _ids()
    with torch.no_grad():
        off = _model()
        torch.testing.assert_close(off(ids, torch.zeros(3)), off(ids, torch.rand(3)), rtol=0, atol=0)
        on = _model(time_conditioning=True)
        assert not torch.allclose(on(ids, torch.zeros(3)), on(ids, torch.full((3,), 0.7)))
        torch.testing.assert_close(on(ids, 0.7), on(ids, torch.full((3,), 0.7)))  # a scalar time is broadcast


def test_attention_is_bidirectional_and_rows_are_independent():
    model = _model()
    ids = _ids(batch=2)
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % (VOCAB - 1)
    with torch.no_grad():
        a, b = model(ids, torch.zeros(2)), model(changed, torch.zeros(2))
        alone = model(ids[1:], torch.zeros(1))
    assert not torch.allclose(a[:, 0], b[:, 0]), "a later token must change an earlier position's logits"
    # batching changes only the order of float32 sums
    torch.testing.assert_close(a[1:], alone, rtol=0, atol=_fp32_atol(alone, _reduction_terms(ids.shape[1])))


def test_return_dict_and_hidden_states():
    model = _model()
    ids = _ids()
    with torch.no_grad():
        bare = model(ids, torch.zeros(3))
        out = model(ids, torch.zeros(3), output_hidden_states=True, return_dict=True)
        logits, hidden = model(ids, torch.zeros(3), output_hidden_states=True)
    assert type(out).__name__ == "MaskedLMOutput" and out.loss is None
    torch.testing.assert_close(out.logits, bare, rtol=0, atol=0)
    torch.testing.assert_close(logits, bare, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(hidden, out.hidden_states))
    assert len(out.hidden_states) == BLOCKS + 1 and all(h.shape == (3, 12, HIDDEN) for h in out.hidden_states)
    torch.testing.assert_close(out.hidden_states[0], model.backbone.vocab_embed.embedding[ids], rtol=0, atol=0)
    assert model(ids, torch.zeros(3), return_dict=True).hidden_states is None


def test_training_mode_applies_residual_dropout_only_in_training():
    model = _model(dropout=0.5)
    ids = _ids()
    with torch.no_grad():
        eval_logits = model(ids, torch.zeros(3))
        model.train()
        train_logits = model(ids, torch.zeros(3))
    assert not torch.allclose(eval_logits, train_logits)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = _ids()
    grads = []
    for checkpointing in (False, True):
        model = _model(dropout=0.0).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(block.gradient_checkpointing for block in model.backbone.blocks)
        model(ids, torch.zeros(3)).logsumexp(-1).mean().backward()
        grads.append(model.backbone.blocks[0].attn_qkv.weight.grad.clone())
    # the recomputed forward is the same computation; the backward sums the same terms (forward and backward paths)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=_fp32_atol(grads[0], 2 * _reduction_terms(ids.shape[1])))


def test_bfloat16_weights_run_without_autocast():
    model = _model().to(torch.bfloat16)
    with torch.no_grad():
        logits = model(_ids(), torch.zeros(3))
        reference = _model()(_ids(), torch.zeros(3))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert (logits.float() - reference).abs().mean() < 0.1 * reference.abs().mean()


def test_bad_input_is_refused_naming_the_argument():
    model = _model()
    with pytest.raises(TypeError):
        model(input_ids=_ids())  # timesteps is required, as upstream
    with pytest.raises(ValueError, match=r"timesteps has shape \(2,\); expected \(3,\)"):
        model(_ids(), torch.zeros(2))
    with pytest.raises(ValueError, match="input_ids must be an integer tensor"):
        model(torch.zeros(3, 12), torch.zeros(3))
    with pytest.raises(ValueError, match=r"hidden_dim=30 and n_heads=4"):
        _config(hidden_dim=30)
    with pytest.raises(ValueError, match=r"hidden_dim=36 and n_heads=4"):  # odd head width: no rotary pairs
        _config(hidden_dim=36)
    with pytest.raises(ValueError, match=r"n_blocks=0 must be a positive int"):
        _config(n_blocks=0)
    with pytest.raises(ValueError, match=r"dropout=1.0"):
        _config(dropout=1.0)


# ----- (c) save / load ----------------------------------------------------------------------------------
def test_save_pretrained_round_trip(tmp_path):
    model = _model(time_conditioning=True)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "mdlm" and config["hidden_dim"] == HIDDEN and config["time_conditioning"] is True
    loaded = MDLMForMaskedLM.from_pretrained(tmp_path).eval()
    ids, t = _ids(), torch.tensor([0.2, 0.4, 0.6])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, t), model(ids, t), rtol=0, atol=0)


# ----- (d) PRISM on the port ------------------------------------------------------------------------------
def _prism():
    torch.manual_seed(0)
    model = PrismForMaskedDiffusion.from_backbone(_model(dropout=0.0), head_type="mlp").eval()
    with torch.no_grad():
        for p in model.quality_head.parameters():
            p.normal_(0, 0.5)
    return model


def test_prism_reads_logits_and_the_final_norm():
    model = _prism()
    assert model.mask_token_id == MASK and model.family is get_family("mdlm")
    ids = _ids()
    captured = {}
    model.backbone.backbone.output_layer.norm_final.register_forward_hook(lambda m, a, out: captured.update(norm=out))
    with torch.no_grad():
        out = model(ids, output_last_hidden_state=True)
        raw = model.backbone(ids, torch.zeros(3))
        manual_quality = model.quality_head(captured["norm"])
    torch.testing.assert_close(out.logits, raw, rtol=0, atol=0)
    torch.testing.assert_close(out.last_hidden_state, captured["norm"], rtol=0, atol=0)
    torch.testing.assert_close(out.quality_logits, manual_quality.float().reshape(3, 12), rtol=0, atol=0)


def test_prism_trainer_and_pipeline_run_on_the_port(tmp_path):
    model = _prism().train()
    g = torch.Generator().manual_seed(0)
    dataset = datasets.Dataset.from_dict({"input_ids": torch.randint(0, VOCAB - 1, (16, 16), generator=g).tolist()})
    args = PrismTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
        use_cpu=True, disable_tqdm=True, logging_steps=1, save_strategy="no", seed=0, num_update_tokens=3,
        num_proposals=2,
    )
    before = model.backbone.backbone.blocks[0].attn_qkv.weight.detach().clone()
    trainer = PrismTrainer(model, args, train_dataset=dataset)
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert not torch.equal(before, model.backbone.backbone.blocks[0].attn_qkv.weight.detach())

    pipe = PrismPipeline(model=model.eval(), scheduler=PrismScheduler(remasking="prism", num_remask=2))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(input_ids=torch.tensor([[3, 4, 5]]), gen_length=12, num_inference_steps=4, output_type="seq",
               generator=torch.Generator().manual_seed(0))
    assert out.sequences.shape == (1, 12) and not (out.sequences == MASK).any()
    assert out.quality.shape == (1, 12) and ((out.quality >= 0) & (out.quality <= 1)).all()


# ----- (e) a folder in the Hub checkpoint's layout loads as the native class without remote code -----------
_LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import prism_hf.models.mdlm  # registers model_type "mdlm"
    from transformers import AutoConfig, AutoModelForMaskedLM
    from prism_hf.modeling_prism import PrismForMaskedDiffusion

    folder = sys.argv[1]
    ids = torch.tensor(json.loads(sys.argv[2]))
    report = {}
    for trust in (False, None):
        kwargs = {} if trust is None else {"trust_remote_code": trust}
        model = AutoModelForMaskedLM.from_pretrained(folder, **kwargs).eval()
        report[str(trust)] = type(model).__module__ + "." + type(model).__name__
    report["config"] = type(AutoConfig.from_pretrained(folder)).__name__
    with torch.no_grad():
        report["logits"] = model(ids, torch.zeros(ids.shape[0])).tolist()
    prism = PrismForMaskedDiffusion.from_backbone(folder).eval()
    report["prism_backbone"] = type(prism.backbone).__name__
    report["prism_mask"] = prism.mask_token_id
    prism.save_pretrained(sys.argv[3])
    reloaded = PrismForMaskedDiffusion.from_pretrained(sys.argv[3]).eval()
    report["prism_reloaded_backbone"] = type(reloaded.backbone).__name__
    with torch.no_grad():
        a, b = prism(ids), reloaded(ids)
    report["prism_round_trip"] = bool(torch.equal(a.logits, b.logits) and torch.equal(a.quality_logits, b.quality_logits))
    print("REPORT" + json.dumps(report))
    """
)


def test_upstream_layout_folder_loads_as_native_class_without_remote_code(tmp_path):
    """config.json as the Hub's (auto_map to remote code, architectures ["MDLM"]) + model.safetensors; the remote
    modules in the folder raise if executed. PRISM wraps it by path, saves, and rebuilds the same backbone class. Runs in a fresh interpreter so that no other registration of
    ``mdlm`` (prism_hf.testing's stand-in) made by other test modules interferes."""
    model = _model()
    folder = tmp_path / "mdlm-owt-layout"
    folder.mkdir()
    config = {
        "architectures": ["MDLM"],
        "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig", "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
        "model_type": "mdlm", "vocab_size": VOCAB, "model_length": LENGTH, "hidden_dim": HIDDEN, "cond_dim": COND,
        "n_blocks": BLOCKS, "n_heads": HEADS, "dropout": 0.1, "time_conditioning": False, "torch_dtype": "float32",
        "transformers_version": "4.38.2",
    }
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("configuration_mdlm.py", "modeling_mdlm.py"):
        (folder / name).write_text("raise ImportError('remote code must not run')\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ids = _ids(batch=2, length=8)
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, str(folder), json.dumps(ids.tolist()), str(tmp_path / "prism")],
        check=False, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    native = "prism_hf.models.mdlm.modeling_mdlm.MDLMForMaskedLM"
    assert report["False"] == native and report["None"] == native and report["config"] == "MDLMConfig"
    with torch.no_grad():
        here = model(ids, torch.zeros(2))
        # another process may run another thread count, hence another summation order
        torch.testing.assert_close(torch.tensor(report["logits"]), here, rtol=0, atol=_fp32_atol(here, _reduction_terms(ids.shape[1])))
    assert report["prism_backbone"] == "MDLMForMaskedLM" and report["prism_mask"] == MASK
    assert report["prism_reloaded_backbone"] == "MDLMForMaskedLM" and report["prism_round_trip"] is True
