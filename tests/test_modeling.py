"""Tests for PrismForMaskedDiffusion: every registered family, heads, save/load round trips, LoRA, bad input."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, BertTokenizer

from prism_hf import (
    PRISM_FORMAT_VERSION,
    BackboneFamily,
    PrismConfig,
    PrismForMaskedDiffusion,
    QualityHead,
    UnknownFamilyError,
    get_family,
    register_family,
    register_head,
    registered_families,
)
from prism_hf.heads import HEAD_REGISTRY
from prism_hf.testing import TINY_BUILDERS, tiny_bert, tiny_dream, tiny_llada, tiny_mdlm, tiny_modernbert

FAMILY_BUILDERS = {
    # family name -> (builder, extra from_backbone kwargs)
    "masked-lm/bert": (tiny_bert, {"mask_token_id": 63}),
    "masked-lm/modernbert": (tiny_modernbert, {}),
    "llada": (tiny_llada, {}),
    "dream": (tiny_dream, {}),
    "mdlm": (tiny_mdlm, {}),
}


def _wrap(name, head="mlp", **kwargs):
    builder, extra = FAMILY_BUILDERS[name]
    return PrismForMaskedDiffusion.from_backbone(builder(), head_type=head, **extra, **kwargs).eval()


def _inputs(vocab=60, batch=3, length=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    return ids


@pytest.mark.parametrize("name", sorted(FAMILY_BUILDERS))
def test_every_family_gives_logits_and_quality_from_one_forward(name):
    model = _wrap(name)
    ids = _inputs()
    calls = []
    handle = model.backbone.register_forward_hook(lambda m, a, o: calls.append(1))
    out = model(ids)
    handle.remove()
    vocab = model.config.vocab_size
    assert out.logits.shape == (3, 12, vocab)
    assert out.quality_logits.shape == (3, 12)
    assert out.quality_logits.dtype == torch.float32
    assert ((out.quality > 0) & (out.quality < 1)).all()
    assert len(calls) == 1, "one backbone forward must give both logits and quality"
    # The backbone was not asked for every layer's hidden states.
    assert getattr(out, "hidden_states", None) is None


@pytest.mark.parametrize("name", ["masked-lm/bert", "llada", "mdlm"])
def test_unshifted_families_return_backbone_logits_unchanged(name):
    model = _wrap(name)
    ids = _inputs()
    with torch.no_grad():
        ours = model(ids).logits
        theirs = model.backbone(**model.family.backbone_inputs(ids, None)).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_mdlm_stand_in_is_as_strict_as_upstream():
    """kuleshov-group/mdlm-owt needs `timesteps` and returns a bare tensor without return_dict: the family handles both."""
    backbone = tiny_mdlm()
    ids = _inputs()
    with pytest.raises(TypeError):
        backbone(input_ids=ids)
    assert isinstance(backbone(input_ids=ids, timesteps=torch.zeros(3)), torch.Tensor)
    inputs = get_family("mdlm").backbone_inputs(ids, torch.ones_like(ids))
    assert "attention_mask" not in inputs and inputs["timesteps"].shape == (3,) and inputs["return_dict"] is True


def test_dream_logits_are_shifted_so_position_i_describes_token_i():
    model = _wrap("dream")
    ids = _inputs()
    with torch.no_grad():
        ours = model(ids).logits
        raw = model.backbone(input_ids=ids).logits
    torch.testing.assert_close(ours[:, 1:], raw[:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(ours[:, 0], raw[:, 0], rtol=0, atol=0)
    assert get_family("Dream").logits_shift


@pytest.mark.parametrize("name", ["masked-lm/bert", "masked-lm/modernbert", "llada", "dream"])
def test_right_padding_leaves_real_positions_unchanged(name):
    """The family's attention-mask convention reaches the backbone: padding does not change real positions."""
    model = _wrap(name)
    ids = _inputs(batch=1, length=8)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        alone = model(ids)
        with_pad = model(padded, attention_mask=mask)
    torch.testing.assert_close(with_pad.logits[:, :8], alone.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(with_pad.quality_logits[:, :8], alone.quality_logits, rtol=1e-4, atol=1e-4)


def test_quality_head_reads_the_last_hidden_state():
    model = _wrap("llada", head="linear")
    ids = _inputs()
    with torch.no_grad():
        out = model(ids, output_last_hidden_state=True)
        expected_hidden = model.backbone.model.transformer.ln_f.weight  # touch to be sure the path exists
        assert expected_hidden is not None
        manual = model.quality_head(out.last_hidden_state)
    torch.testing.assert_close(out.quality_logits, manual.float())
    # the hidden state is what feeds the LM head
    torch.testing.assert_close(model.backbone.model.transformer.ff_out(out.last_hidden_state), out.logits)


def test_registered_families_cover_the_issue():
    names = {family.name for family in registered_families().values()}
    assert {"masked-lm", "llada", "dream", "mdlm"} <= names
    for model_type in ("bert", "roberta", "modernbert", "llada", "Dream", "mdlm"):
        get_family(model_type)


def test_unknown_family_error_says_how_to_register():
    with pytest.raises(UnknownFamilyError, match=r"model_type='gpt2'.*register_family"):
        get_family("gpt2")


def test_register_a_new_family_and_use_it():
    from transformers import GPT2Config, GPT2LMHeadModel

    # A causal LM used as a (toy) backbone: one registry entry is all it takes.
    family = register_family(
        BackboneFamily(name="toy-gpt2", model_types=("gpt2",), auto_class="AutoModelForCausalLM", hidden_state_module="transformer.ln_f"),
        overwrite=True,
    )
    try:
        backbone = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=4, n_positions=32))
        model = PrismForMaskedDiffusion.from_backbone(backbone, mask_token_id=49, head_type="linear")
        out = model(_inputs(vocab=49))
        assert out.quality_logits.shape == (3, 12)
        assert model.family is family
    finally:
        from prism_hf import families

        families._REGISTRY.unregister("gpt2")


@pytest.mark.parametrize("head", sorted(HEAD_REGISTRY))
def test_head_types(head):
    model = _wrap("llada", head=head)
    assert type(model.quality_head) is HEAD_REGISTRY[head]
    assert model(_inputs()).quality_logits.shape == (3, 12)


def test_linear_and_mlp_heads_have_the_recipe_structure():
    lin = _wrap("llada", head="linear").quality_head
    mlp = _wrap("llada", head="mlp").quality_head
    assert [type(m).__name__ for m in lin.children()] == ["LayerNorm", "Linear"]
    assert [type(m).__name__ for m in mlp.children()] == ["LayerNorm", "Linear", "GELU", "Linear"]
    assert mlp.fc1.weight.shape == (32, 32) and mlp.fc2.weight.shape == (1, 32)


def test_new_head_type_is_one_small_class():
    @register_head("test-constant")
    class ConstantHead(QualityHead):
        def __init__(self, hidden_size, value=0.0):
            super().__init__(hidden_size)
            self.value = torch.nn.Parameter(torch.tensor(value))

        def forward(self, hidden_states, attention_mask=None):
            return self.value.expand(hidden_states.shape[:2])

    try:
        model = _wrap("llada", head="test-constant", head_kwargs={"value": 2.0})
        assert torch.all(model(_inputs()).quality_logits == 2.0)
    finally:
        HEAD_REGISTRY.unregister("test-constant")


# ----- save / load ---------------------------------------------------------------------------------------
def _assert_same_outputs(a, b, ids):
    with torch.no_grad():
        oa, ob = a(ids), b(ids)
    assert torch.equal(oa.logits, ob.logits)
    assert torch.equal(oa.quality_logits, ob.quality_logits)


@pytest.mark.parametrize("name", sorted(FAMILY_BUILDERS))
def test_round_trip_is_bit_exact_and_automodel_gives_the_class(name, tmp_path):
    model = _wrap(name)
    with torch.no_grad():
        model.quality_head.norm.weight.add_(0.5)  # not the init values
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "README.md").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt")), "never pickle"
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path)
    _assert_same_outputs(model, loaded, _inputs())
    auto = AutoModel.from_pretrained(tmp_path)
    assert type(auto) is PrismForMaskedDiffusion
    _assert_same_outputs(model, auto, _inputs())
    assert type(AutoConfig.from_pretrained(tmp_path)) is PrismConfig


def _saved_backbone(tmp_path, builder=tiny_llada):
    path = tmp_path / "backbone"
    builder().save_pretrained(path)
    return path


def test_backbone_reference_is_recorded_and_frozen_checkpoint_holds_head_only(tmp_path):
    backbone_dir = _saved_backbone(tmp_path)
    model = PrismForMaskedDiffusion.from_backbone(str(backbone_dir), head_type="mlp", backbone_training="frozen")
    assert model.config.backbone_name_or_path == str(backbone_dir)
    assert model.config.backbone_training == "frozen"
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.quality_head.parameters())
    out = tmp_path / "prism"
    model.save_pretrained(out)
    keys = load_file(str(out / "model.safetensors")).keys()
    assert keys and all(k.startswith("quality_head.") for k in keys)
    loaded = PrismForMaskedDiffusion.from_pretrained(out)
    _assert_same_outputs(model.eval(), loaded, _inputs())


def test_full_finetune_with_reference_saves_backbone(tmp_path):
    backbone_dir = _saved_backbone(tmp_path)
    model = PrismForMaskedDiffusion.from_backbone(str(backbone_dir), head_type="linear")
    with torch.no_grad():  # "fine-tune" the backbone: the change must survive the round trip
        model.backbone.model.transformer.wte.weight.mul_(1.5)
    model.save_pretrained(tmp_path / "prism")
    keys = load_file(str(tmp_path / "prism" / "model.safetensors")).keys()
    assert any(k.startswith("backbone.") for k in keys)
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path / "prism")
    _assert_same_outputs(model.eval(), loaded, _inputs())


def test_lora_round_trip_is_exact_and_checkpoint_is_adapter_only(tmp_path):
    backbone_dir = _saved_backbone(tmp_path)
    model = PrismForMaskedDiffusion.from_backbone(str(backbone_dir), head_type="mlp")
    model.enable_lora(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"], lora_dropout=0.0)
    assert model.config.backbone_training == "lora"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("quality_head.") for n in trainable)
    assert any(n.startswith("quality_head.") for n in trainable)
    # Train the adapter a little so that B != 0 and the LoRA weights matter.
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = _inputs()
    model.train()
    for _ in range(3):
        out = model(ids)
        (out.logits.logsumexp(-1).mean() + out.quality_logits.mean()).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    out_dir = tmp_path / "prism"
    model.save_pretrained(out_dir)
    keys = load_file(str(out_dir / "model.safetensors")).keys()
    assert all(k.startswith("quality_head.") for k in keys), "backbone weights must not be duplicated"
    assert (out_dir / "adapter" / "adapter_model.safetensors").is_file()
    backbone_bytes = (backbone_dir / "model.safetensors").stat().st_size
    checkpoint_bytes = sum(f.stat().st_size for f in out_dir.rglob("*.safetensors"))
    assert checkpoint_bytes < backbone_bytes / 2
    loaded = PrismForMaskedDiffusion.from_pretrained(out_dir)
    _assert_same_outputs(model, loaded, ids)
    # The LoRA weights are really part of the result (a model without them differs).
    with torch.no_grad(), loaded.backbone.disable_adapter():
        base_only = loaded(ids).logits
    assert not torch.equal(base_only, loaded(ids).logits)
    trainable_loaded = PrismForMaskedDiffusion.from_pretrained(out_dir, is_trainable=True)
    assert any(p.requires_grad for n, p in trainable_loaded.named_parameters() if "lora_" in n)


def test_lora_without_reference_stores_everything(tmp_path):
    model = _wrap("llada")
    assert model.config.backbone_name_or_path is None
    model.enable_lora(r=2, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    model.save_pretrained(tmp_path)
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path)
    _assert_same_outputs(model.eval(), loaded, _inputs())


def test_tied_weights_survive_the_round_trip(tmp_path):
    model = _wrap("masked-lm/bert")
    emb = model.backbone.get_input_embeddings().weight
    dec = model.backbone.get_output_embeddings().weight
    assert emb.data_ptr() == dec.data_ptr()
    model.save_pretrained(tmp_path)
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path)
    assert loaded.backbone.get_input_embeddings().weight.data_ptr() == loaded.backbone.get_output_embeddings().weight.data_ptr()
    _assert_same_outputs(model, loaded, _inputs())


def test_model_card_names_backbone_head_and_recipe(tmp_path):
    backbone_dir = _saved_backbone(tmp_path)
    model = PrismForMaskedDiffusion.from_backbone(str(backbone_dir), head_type="linear", backbone_training="frozen")
    model.config.recipe = {"num_update_tokens": 4, "mdm_loss_weight": 5.0}
    model.save_pretrained(tmp_path / "prism")
    card = (tmp_path / "prism" / "README.md").read_text()
    assert str(backbone_dir) in card and "`linear`" in card and "mdm_loss_weight" in card and "frozen" in card


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    import huggingface_hub

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Url", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded["repo_id"] = repo_id
            uploaded["files"] = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            uploaded["card"] = (Path(folder_path) / "README.md").read_text()
            return "ok"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    backbone_dir = _saved_backbone(tmp_path)
    model = PrismForMaskedDiffusion.from_backbone(str(backbone_dir), head_type="mlp")
    model.enable_lora(r=2, target_modules=["q_proj"])
    assert model.push_to_hub("me/prism-tiny") == "ok"
    assert uploaded["repo_id"] == "me/prism-tiny"
    assert {"config.json", "model.safetensors", "README.md", "adapter/adapter_model.safetensors"} <= set(uploaded["files"])
    assert "PRISM" in uploaded["card"]


# ----- mask token resolution and bad input ---------------------------------------------------------------
def test_mask_token_from_config_and_from_tokenizer(tmp_path):
    assert _wrap("llada").mask_token_id == 63
    assert _wrap("mdlm").mask_token_id == 64  # family rule: last vocabulary id
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]))
    tokenizer = BertTokenizer(str(vocab))
    model = PrismForMaskedDiffusion.from_backbone(tiny_bert(), tokenizer=tokenizer)
    assert model.mask_token_id == tokenizer.mask_token_id == 4


def test_no_mask_token_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mask_token_id=None.*Pass `mask_token_id="):
        PrismForMaskedDiffusion.from_backbone(tiny_bert())


def test_mask_id_outside_vocabulary_is_a_clear_error():
    with pytest.raises(ValueError, match=r"mask_token_id=64 .*outside the vocabulary: valid ids are 0..63"):
        PrismForMaskedDiffusion.from_backbone(tiny_bert(), mask_token_id=64)


def test_unknown_head_type_is_a_clear_error():
    with pytest.raises(ValueError, match=r"head_type='conv'.*valid head types: \['linear', 'mlp', 'transformer'"):
        PrismForMaskedDiffusion.from_backbone(tiny_llada(), head_type="conv")


def test_input_ids_of_wrong_dtype_or_rank_are_clear_errors():
    model = _wrap("llada")
    with pytest.raises(TypeError, match=r"input_ids must hold integer token ids.*dtype=torch.float32"):
        model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"input_ids must have rank 2.*rank 1"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids"):
        model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))


def test_unresolvable_backbone_reference_offline_says_what_to_do(tmp_path):
    backbone_dir = _saved_backbone(tmp_path)
    model = PrismForMaskedDiffusion.from_backbone(str(backbone_dir), backbone_training="frozen")
    model.save_pretrained(tmp_path / "prism")
    config = json.loads((tmp_path / "prism" / "config.json").read_text())
    config["backbone_name_or_path"] = "some-org/not-downloaded-mdm"
    (tmp_path / "prism" / "config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match=r"(?s)Cannot load the backbone 'some-org/not-downloaded-mdm'.*pass backbone="):
        PrismForMaskedDiffusion.from_pretrained(tmp_path / "prism")
    # ...and the advice works: point it at a local copy.
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path / "prism", backbone=str(backbone_dir))
    _assert_same_outputs(model.eval(), loaded, _inputs())


def _remote_code_family():
    """A PRISM family for the remote-code-only test double (tests/doubles/remote_mdm.py), under its own model_type."""
    return register_family(
        BackboneFamily(name="remote-test-mdm", model_types=("prism-test-remote-mdm",), auto_class="AutoModelForMaskedLM",
                       hidden_state_module="norm"),
        overwrite=True,
    )


def _remote_code_folder(path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from doubles.remote_mdm import save_remote_code_folder
    finally:
        sys.path.pop(0)
    _remote_code_family()
    return save_remote_code_folder(path)


def test_remote_code_backbone_needs_explicit_trust(tmp_path):
    """A family prism_hf has no native port of runs its remote code, and only with trust_remote_code=True."""
    folder = _remote_code_folder(tmp_path / "remote")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        PrismForMaskedDiffusion.from_backbone(str(folder), backbone_training="frozen")
    model = PrismForMaskedDiffusion.from_backbone(str(folder), backbone_training="frozen", trust_remote_code=True)
    assert model.config.backbone_trust_remote_code
    assert type(model.backbone).__module__.startswith("transformers_modules")
    model.save_pretrained(tmp_path / "prism")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        PrismForMaskedDiffusion.from_pretrained(tmp_path / "prism")
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path / "prism", trust_remote_code=True)
    _assert_same_outputs(model.eval(), loaded, _inputs())


def test_hub_layout_llada_folder_loads_with_the_native_port_whatever_trust_remote_code_says(tmp_path):
    """examples/make_tiny_llada.py writes the Hub's layout (auto_map naming remote files that are not there): the
    native port loads it, with or without trust_remote_code, so the published code never runs."""
    import importlib.util

    from prism_hf.models.llada import LLaDAModelLM

    spec = importlib.util.spec_from_file_location("make_tiny_llada", Path(__file__).parents[1] / "examples" / "make_tiny_llada.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = module.make_tiny_llada(tmp_path / "tiny-llada", d_model=32)
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    for trust in (False, True):
        model = PrismForMaskedDiffusion.from_backbone(str(folder), trust_remote_code=trust, backbone_training="frozen")
        assert type(model.backbone) is LLaDAModelLM and model.family.name == "llada"
        assert not model.config.backbone_trust_remote_code and model.config.backbone_implementation == "native"
    assert model.mask_token_id == 4
    model.save_pretrained(tmp_path / "prism")
    loaded = PrismForMaskedDiffusion.from_pretrained(tmp_path / "prism")
    _assert_same_outputs(model.eval(), loaded, _inputs(vocab=100))
    # The explicit opt-out needs trust_remote_code, and says so before anything runs.
    with pytest.raises(ValueError, match=r"backbone_implementation='remote'.*trust_remote_code=True"):
        PrismForMaskedDiffusion.from_backbone(str(folder), backbone_implementation="remote")
    with pytest.raises(ValueError, match=r"backbone_implementation='hub' is not valid.*'native', 'remote'"):
        PrismForMaskedDiffusion.from_backbone(str(folder), backbone_implementation="hub")


def test_full_weights_of_a_remote_code_backbone_reload_in_a_fresh_process(tmp_path):
    """The backbone class is not in transformers nor in prism_hf: it is rebuilt from the reference's remote code."""
    import os
    import subprocess
    import sys

    folder = _remote_code_folder(tmp_path / "remote")
    model = PrismForMaskedDiffusion.from_backbone(str(folder), trust_remote_code=True)  # full fine-tune
    with torch.no_grad():
        model.backbone.embed.weight.mul_(2.0)
    model.save_pretrained(tmp_path / "prism")
    ids = _inputs()
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = model.eval()(ids).logits
    torch.save(expected, tmp_path / "expected.pt")
    script = (
        "import sys, torch\n"
        "from prism_hf import PrismForMaskedDiffusion, BackboneFamily, register_family\n"
        "register_family(BackboneFamily(name='remote-test-mdm', model_types=('prism-test-remote-mdm',), "
        "auto_class='AutoModelForMaskedLM', hidden_state_module='norm'))\n"
        f"m = PrismForMaskedDiffusion.from_pretrained({str(tmp_path / 'prism')!r}, trust_remote_code=True)\n"
        f"ids = torch.load({str(tmp_path / 'ids.pt')!r})\n"
        "with torch.no_grad():\n"
        "    logits = m(ids).logits\n"
        f"assert torch.equal(logits, torch.load({str(tmp_path / 'expected.pt')!r}))\n"
        "assert type(m.backbone).__module__.startswith('transformers_modules')\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_newer_checkpoint_format_is_refused(tmp_path):
    model = _wrap("llada")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["prism_format_version"] = PRISM_FORMAT_VERSION + 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"prism_format_version={PRISM_FORMAT_VERSION + 1}.*Upgrade prism_hf"):
        PrismForMaskedDiffusion.from_pretrained(tmp_path)


def test_missing_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="neither a local folder nor a reachable Hub repo"):
        PrismForMaskedDiffusion.from_pretrained(tmp_path / "nope")


def test_backbone_training_mode_is_validated():
    model = _wrap("llada")
    with pytest.raises(ValueError, match=r"mode='half'.*'full', 'lora', 'frozen'"):
        model.set_backbone_training("half")
    with pytest.raises(ValueError, match="backbone_training='half'"):
        PrismConfig(backbone_training="half")


def test_all_tiny_builders_are_covered():
    assert set(TINY_BUILDERS) == {"bert", "modernbert", "llada", "dream", "mdlm"}


def test_tiny_char_tokenizer_round_trips_and_has_chat_template():
    from prism_hf.testing import tiny_char_tokenizer

    tokenizer = tiny_char_tokenizer()
    text = "def add(a, b):\n\treturn a + b  # ok"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|user|>hi<|eos|><|assistant|>"
    model = PrismForMaskedDiffusion.from_backbone(tiny_llada(vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id))
    assert model.mask_token_id == tokenizer.mask_token_id


def test_public_exports_resolve_lazily():
    import subprocess
    import sys

    import prism_hf

    for name in prism_hf.__all__:
        assert getattr(prism_hf, name) is not None, name
    assert prism_hf.PrismPipeline.__module__ == "prism_hf.sampling.pipeline_prism"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        prism_hf.Nope
    script = "import sys, prism_hf; assert 'diffusers' not in sys.modules and 'prism_hf.trainer' not in sys.modules; print('ok')"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(FAMILY_BUILDERS))
def test_quality_only_forward_stops_before_the_vocabulary_projection(name):
    model = _wrap(name)
    ids = _inputs()
    full = model(ids)
    head_calls = []
    output_layer = {
        "llada": lambda b: b.model.transformer.ff_out,
        "dream": lambda b: b.lm_head,
        "mdlm": lambda b: b.backbone.output_layer.linear,
    }.get(name, lambda b: b.get_output_embeddings())(model.backbone)
    handle = output_layer.register_forward_hook(lambda m, a, o: head_calls.append(1))
    quality_only = model(ids, output_logits=False)
    handle.remove()
    assert quality_only.logits is None and not head_calls, "the vocabulary projection must not run"
    torch.testing.assert_close(quality_only.quality_logits, full.quality_logits, rtol=0, atol=0)
    # Gradients reach the backbone through the hidden state.
    model.train()
    model(ids, output_logits=False).quality_logits.sum().backward()
    grads = [p.grad for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # The model is left in a clean state: the next full forward gives logits again.
    assert model(ids).logits is not None


@pytest.mark.parametrize(
    "damage, message",
    [
        ("zero_weights", r"model.safetensors' is not a readable safetensors file .*damaged or incomplete \(0 bytes\)"),
        ("truncated_weights", r"is not a readable safetensors file .*damaged or incomplete"),
        ("missing_weights", r"model.safetensors' is missing"),
        ("garbage_config", r"config.json is not valid JSON .*damaged"),
        ("empty_config", r"config.json is not valid JSON"),
    ],
)
def test_damaged_checkpoints_are_clear_errors(tmp_path, damage, message):
    model = _wrap("llada")
    model.save_pretrained(tmp_path)
    weights, config = tmp_path / "model.safetensors", tmp_path / "config.json"
    if damage == "zero_weights":
        weights.write_bytes(b"")
    elif damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "missing_weights":
        weights.unlink()
    elif damage == "garbage_config":
        config.write_text("{not json")
    else:
        config.write_text("")
    with pytest.raises((ValueError, OSError), match=message):
        PrismForMaskedDiffusion.from_pretrained(tmp_path)


def test_a_backbone_folder_is_not_a_prism_checkpoint(tmp_path):
    tiny_llada().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is not a PRISM checkpoint \(model_type='llada'\).*from_backbone"):
        PrismForMaskedDiffusion.from_pretrained(tmp_path)


def test_pickle_only_backbones_need_an_explicit_opt_out(tmp_path):
    backbone = tiny_bert()
    backbone.config.save_pretrained(tmp_path)
    torch.save(backbone.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match=r"holds only pickle weights .*use_safetensors=False"):
        PrismForMaskedDiffusion.from_backbone(str(tmp_path), mask_token_id=63)
    model = PrismForMaskedDiffusion.from_backbone(str(tmp_path), mask_token_id=63, use_safetensors=False)
    torch.testing.assert_close(model.backbone.state_dict()["bert.embeddings.word_embeddings.weight"],
                               backbone.state_dict()["bert.embeddings.word_embeddings.weight"])
