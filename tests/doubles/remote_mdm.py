"""A small masked LM that exists only as *remote code*: tests copy this file into a model folder whose config.json
names it in ``auto_map``, the way a Hub repository ships its own modeling code. Its ``model_type`` is its own
("prism-test-remote-mdm"), so it shadows no real model; tests register a PRISM family for it.
"""

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class RemoteMDMConfig(PretrainedConfig):
    model_type = "prism-test-remote-mdm"

    def __init__(self, vocab_size=64, hidden_size=32, mask_token_id=63, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


class RemoteMDMForMaskedLM(PreTrainedModel):
    config_class = RemoteMDMConfig
    base_model_prefix = "encoder"

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(config.hidden_size, 4, 2 * config.hidden_size, dropout=0.0, batch_first=True), 1
        )
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.1)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        padding = None if attention_mask is None else ~attention_mask.bool()
        hidden = self.norm(self.encoder(self.embed(input_ids), src_key_padding_mask=padding))
        return MaskedLMOutput(logits=self.lm_head(hidden))


def save_remote_code_folder(folder, seed=0, **config_kwargs):
    """Write a randomly initialised model with this file as its remote code; returns the folder."""
    import json
    import shutil
    from pathlib import Path

    torch.manual_seed(seed)
    folder = Path(folder)
    RemoteMDMForMaskedLM(RemoteMDMConfig(**config_kwargs)).save_pretrained(folder)
    shutil.copyfile(__file__, folder / "modeling_remote_mdm.py")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "modeling_remote_mdm.RemoteMDMConfig",
        "AutoModelForMaskedLM": "modeling_remote_mdm.RemoteMDMForMaskedLM",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
