"""Issue 15, checkpointing: one module owns the on-disk layout; `from_pretrained` passes every transformers keyword
argument it does not consume on to the backbone; `head_type` is the one name of the head type."""

import json

import pytest
import torch
import transformers

from prism_hf import PrismForMaskedDiffusion
from prism_hf.modeling import checkpointing
from prism_hf.modeling.checkpointing import (
    CHECKPOINT_WEIGHTS_NAME,
    load_checkpoint,
    restore_training_checkpoint,
    save_checkpoint,
    stores_backbone_weights,
)
from prism_hf.testing import tiny_bert, tiny_llada


def _ids(vocab=60, batch=2, length=10, seed=4):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def _trained_head(model):
    with torch.no_grad():
        model.quality_head.norm.weight.add_(0.25)  # not the init values
    return model


@pytest.fixture
def stored(tmp_path):
    """A checkpoint that stores its backbone's weights (the backbone has no reference)."""
    model = _trained_head(PrismForMaskedDiffusion.from_backbone(tiny_llada())).eval()
    model.save_pretrained(tmp_path / "stored")
    return model, tmp_path / "stored"


@pytest.fixture
def referenced(tmp_path):
    """A frozen-backbone checkpoint that stores only the head and loads its backbone from a folder."""
    tiny_llada().save_pretrained(tmp_path / "backbone")
    model = _trained_head(PrismForMaskedDiffusion.from_backbone(str(tmp_path / "backbone"), backbone_training="frozen")).eval()
    model.save_pretrained(tmp_path / "referenced")
    return model, tmp_path / "referenced"


def _same_outputs(a, b):
    ids = _ids()
    with torch.no_grad():
        oa, ob = a(ids), b(ids)
    return torch.equal(oa.logits, ob.logits) and torch.equal(oa.quality_logits, ob.quality_logits)


# ----- keyword arguments reach the backbone ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["stored", "referenced"])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_attn_implementation_reaches_the_backbone(layout, attn_implementation, request):
    model, folder = request.getfixturevalue(layout)
    loaded = PrismForMaskedDiffusion.from_pretrained(folder, attn_implementation=attn_implementation)
    assert loaded._raw_backbone().config._attn_implementation == attn_implementation
    # eager and sdpa attention are the same function: float32 over <= 10 keys of width 8 per head
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=1e-5 * 32 ** 0.5, atol=1e-5 * 32 ** 0.5)


@pytest.mark.parametrize("layout", ["stored", "referenced"])
@pytest.mark.parametrize("kwargs", [{"low_cpu_mem_usage": True}, {"device_map": "cpu"},
                                    {"low_cpu_mem_usage": True, "device_map": "cpu", "use_safetensors": True}])
def test_low_cpu_mem_usage_and_device_map_are_accepted(layout, kwargs, request):
    model, folder = request.getfixturevalue(layout)
    loaded = PrismForMaskedDiffusion.from_pretrained(folder, **kwargs)
    assert _same_outputs(model, loaded)
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}


def test_every_unconsumed_keyword_reaches_the_backbones_from_pretrained(referenced, monkeypatch):
    _, folder = referenced
    seen = []
    original = transformers.AutoModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(dict(kwargs))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", classmethod(spy))
    passed = {"attn_implementation": "eager", "low_cpu_mem_usage": True, "device_map": "cpu", "max_memory": {"cpu": "1GiB"},
              "use_safetensors": True}
    # _from_auto and _commit_hash: what AutoModel.from_pretrained adds for the PRISM model itself
    PrismForMaskedDiffusion.from_pretrained(folder, local_files_only=True, _from_auto=True, _commit_hash=None, **passed)
    assert len(seen) == 1
    for name, value in passed.items():
        assert seen[0][name] == value, name
    assert seen[0]["local_files_only"] is True  # a Hub argument reaches the checkpoint and the backbone
    # what the PRISM loader consumes itself does not reach the backbone; its config is the backbone's own
    assert "_from_auto" not in seen[0] and "_commit_hash" not in seen[0]
    assert seen[0]["config"].model_type == "llada"


def test_a_stored_backbone_names_the_arguments_its_builder_refuses(stored):
    _, folder = stored
    with pytest.raises(TypeError, match=r"\['max_memory'\]: this checkpoint stores its backbone's weights.*from_config"):
        PrismForMaskedDiffusion.from_pretrained(folder, max_memory={"cpu": "1GiB"})


def test_torch_dtype_is_the_old_spelling_of_dtype(stored):
    _, folder = stored
    loaded = PrismForMaskedDiffusion.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert loaded._raw_backbone().dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"dtype=torch.float32 and torch_dtype=torch.bfloat16 disagree"):
        PrismForMaskedDiffusion.from_pretrained(folder, dtype=torch.float32, torch_dtype=torch.bfloat16)


# ----- the layout in one module -------------------------------------------------------------------------------------
def test_save_and_load_through_the_module_functions(tmp_path):
    model = _trained_head(PrismForMaskedDiffusion.from_backbone(tiny_bert(), mask_token_id=63)).eval()
    written = save_checkpoint(model, tmp_path / "ckpt")
    assert {"config.json", CHECKPOINT_WEIGHTS_NAME, "README.md"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    # BERT ties its output projection to its input embedding: the storage is written once
    assert "backbone.cls.predictions.decoder.weight" not in written
    assert "backbone.bert.embeddings.word_embeddings.weight" in written
    loaded = load_checkpoint(PrismForMaskedDiffusion, tmp_path / "ckpt")
    assert _same_outputs(model, loaded) and not loaded.training


def test_stores_backbone_weights_reads_old_and_new_records():
    assert stores_backbone_weights({"backbone_weights_saved": True, "backbone_name_or_path": "x"})
    assert not stores_backbone_weights({"backbone_weights_saved": False, "backbone_name_or_path": None})
    # checkpoints written before the record: stored exactly when there is no reference
    assert stores_backbone_weights({"backbone_name_or_path": None})
    assert not stores_backbone_weights({"backbone_name_or_path": "GSAI-ML/LLaDA-8B-Instruct"})


def test_restore_training_checkpoint_reloads_in_place_and_refuses_bad_input(referenced, tmp_path):
    model, folder = referenced
    fresh = PrismForMaskedDiffusion.from_backbone(model._raw_backbone(), backbone_training="frozen").eval()
    assert not _same_outputs(model, fresh)
    assert restore_training_checkpoint(fresh, folder) == "frozen"
    assert _same_outputs(model, fresh)
    with pytest.raises(ValueError, match=r"resume_from_checkpoint='.*empty' is not a PRISM checkpoint"):
        (tmp_path / "empty").mkdir()
        restore_training_checkpoint(fresh, tmp_path / "empty")
    full = PrismForMaskedDiffusion.from_backbone(tiny_llada())
    with pytest.raises(ValueError, match=r"checkpoint='.*' was saved with backbone_training='frozen' but the model is set "
                                         r"up for 'full'"):
        restore_training_checkpoint(full, folder, argument="checkpoint")


def test_the_model_module_keeps_the_previous_release_names():
    from prism_hf.modeling import modeling_prism

    assert modeling_prism.CHECKPOINT_WEIGHTS_NAME == checkpointing.CHECKPOINT_WEIGHTS_NAME == "model.safetensors"
    assert modeling_prism.load_checkpoint_weights is checkpointing.load_checkpoint_weights
    assert modeling_prism._as_torch_dtype is checkpointing.as_torch_dtype
    assert modeling_prism._load_backbone is checkpointing.load_backbone


# ----- head_type, the one name of the head type ---------------------------------------------------------------------
def test_from_backbone_head_type_and_its_deprecated_name():
    assert PrismForMaskedDiffusion.from_backbone(tiny_llada(), head_type="linear").config.head_type == "linear"
    assert PrismForMaskedDiffusion.from_backbone(tiny_llada()).config.head_type == "mlp"
    with pytest.warns(FutureWarning, match=r"from_backbone: `head` is deprecated; use `head_type`.*0\.3\.0"):
        model = PrismForMaskedDiffusion.from_backbone(tiny_llada(), head="linear")
    assert model.config.head_type == "linear"
    with pytest.raises(TypeError, match=r"pass `head_type` only; `head` is its deprecated name"):
        PrismForMaskedDiffusion.from_backbone(tiny_llada(), head="linear", head_type="linear")
    with pytest.raises(ValueError, match=r"head_type='conv' is not a known quality head"):
        PrismForMaskedDiffusion.from_backbone(tiny_llada(), head_type="conv")


def test_saved_config_names_the_head_type(stored):
    _, folder = stored
    config = json.loads((folder / "config.json").read_text())
    assert config["head_type"] == "mlp" and "head" not in config
