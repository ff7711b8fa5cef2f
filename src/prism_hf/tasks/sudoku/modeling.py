"""A small masked diffusion backbone for Sudoku, built from a transformers config.

`SudokuMDMForMaskedLM` is a bidirectional pre-norm transformer encoder (a BERT/ModernBERT-style masked
LM) whose position embedding is structure-aware: each token gets the sum of learned row, column and box
embeddings (and a "separator" embedding for the row-separator tokens) instead of one embedding per
absolute position. Cells that share a unit then share an embedding component, which lets a model of
~0.1-0.5M parameters learn the Sudoku constraints within a few minutes on a CPU.

The model type ``sudoku_mdm`` is registered with the transformers Auto classes (so
``AutoModelForMaskedLM.from_pretrained(dir)`` loads it) and with `prism_hf.register_family` as a
masked-LM family, so `PrismForMaskedDiffusion.from_backbone(model)` works directly.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from ...modeling.families import BackboneFamily, register_family
from .grids import SudokuInputError, SudokuSpec

__all__ = ["SudokuMDMConfig", "SudokuMDMForMaskedLM", "SUDOKU_MODEL_TYPE"]

SUDOKU_MODEL_TYPE = "sudoku_mdm"


class SudokuMDMConfig(PretrainedConfig):
    """Configuration of [`SudokuMDMForMaskedLM`].

    Args:
        box_rows (`int`): Rows per box; the grid size is ``box_rows * box_cols``.
        box_cols (`int`): Columns per box.
        hidden_size (`int`): Width ``d``.
        num_hidden_layers (`int`): Transformer blocks.
        num_attention_heads (`int`): Attention heads per block (must divide ``hidden_size``).
        intermediate_size (`int`, *optional*): MLP width; ``4 * hidden_size`` when omitted.
        dropout (`float`): Dropout on attention outputs and MLPs.
        layer_norm_eps (`float`): LayerNorm epsilon.
        initializer_range (`float`): Std of the normal initialisation.
        mask_token_id (`int`): The mask / blank token, always ``0`` in the Sudoku vocabulary.

    ``vocab_size`` (``n + 2``) and ``max_position_embeddings`` (``n * n + n - 1``) follow from the grid.
    """

    model_type = SUDOKU_MODEL_TYPE

    def __init__(self, box_rows: int = 3, box_cols: int = 3, hidden_size: int = 64, num_hidden_layers: int = 4,
                 num_attention_heads: int = 4, intermediate_size: Optional[int] = None, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5, initializer_range: float = 0.02, mask_token_id: int = 0, **kwargs):
        spec = SudokuSpec(int(box_rows), int(box_cols))
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}."
            )
        if mask_token_id != spec.mask_token_id:
            raise ValueError(f"mask_token_id={mask_token_id}: the Sudoku vocabulary's mask / blank id is {spec.mask_token_id}.")
        self.box_rows = int(box_rows)
        self.box_cols = int(box_cols)
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.mask_token_id = mask_token_id
        kwargs.pop("vocab_size", None)
        kwargs.pop("max_position_embeddings", None)
        self.vocab_size = spec.vocab_size
        self.max_position_embeddings = spec.sequence_length
        super().__init__(**kwargs)

    @property
    def sudoku_spec(self) -> SudokuSpec:
        return SudokuSpec(self.box_rows, self.box_cols)


class _Block(nn.Module):
    """Pre-norm bidirectional self-attention block."""

    def __init__(self, config: SudokuMDMConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.attn_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.attn_out = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp_in = nn.Linear(d, config.intermediate_size)
        self.mlp_out = nn.Linear(config.intermediate_size, d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, l, d = hidden.shape
        q, k, v = self.qkv(self.attn_norm(hidden)).view(b, l, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        hidden = hidden + self.dropout(self.attn_out(attn.transpose(1, 2).reshape(b, l, d)))
        return hidden + self.dropout(self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(hidden)))))


class SudokuMDMForMaskedLM(PreTrainedModel):
    """Masked diffusion denoiser for Sudoku token sequences (see the module docstring).

    Input: ``input_ids`` ``(B, L)`` with ``L = n * n + n - 1`` in the Sudoku vocabulary (0 = mask).
    Output: `MaskedLMOutput` with ``logits`` ``(B, L, n + 2)``. The last hidden state is the output of
    ``self.norm`` (what the PRISM quality head reads).
    """

    config_class = SudokuMDMConfig
    base_model_prefix = "sudoku"
    main_input_name = "input_ids"
    _no_split_modules = ["_Block"]

    def __init__(self, config: SudokuMDMConfig):
        super().__init__(config)
        spec = config.sudoku_spec
        n, d = spec.size, config.hidden_size
        self.token_embeddings = nn.Embedding(config.vocab_size, d)
        # Embedding rows 0..n-1 are the grid lines; row n is "separator" (separators get no column/box).
        self.row_embeddings = nn.Embedding(n + 1, d)
        self.col_embeddings = nn.Embedding(n + 1, d)
        self.box_embeddings = nn.Embedding(n + 1, d)
        rows, cols, boxes = (torch.full((spec.sequence_length,), n, dtype=torch.long) for _ in range(3))
        positions = torch.as_tensor(spec.cell_positions())
        r, c, bx = (torch.as_tensor(v) for v in spec.cell_coordinates())
        rows[positions], cols[positions], boxes[positions] = r, c, bx
        self.register_buffer("row_ids", rows, persistent=False)
        self.register_buffer("col_ids", cols, persistent=False)
        self.register_buffer("box_ids", boxes, persistent=False)
        self.register_buffer("disallowed", self._disallowed_tokens(spec), persistent=False)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size)
        self.post_init()

    @staticmethod
    def _disallowed_tokens(spec: SudokuSpec) -> torch.Tensor:
        """``(L, V)`` bool: a cell predicts only digits ``1..n``, a separator position predicts only the separator.

        The layout is fixed, so these logits are pinned to a large negative value: the model spends no capacity
        on the layout and a sampler can never write a separator into a cell.
        """
        disallowed = torch.ones(spec.sequence_length, spec.vocab_size, dtype=torch.bool)
        cells = torch.as_tensor(spec.cell_positions())
        disallowed[cells, 1 : spec.separator_token_id] = False
        separators = torch.ones(spec.sequence_length, dtype=torch.bool)
        separators[cells] = False
        disallowed[separators, spec.separator_token_id] = False
        return disallowed

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, SudokuMDMForMaskedLM):
            # Non-persistent buffers are rebuilt here when the model was created on the meta device.
            spec = self.config.sudoku_spec
            n = spec.size
            positions = torch.as_tensor(spec.cell_positions())
            for name, values in zip(("row_ids", "col_ids", "box_ids"), spec.cell_coordinates()):
                buf = torch.full((spec.sequence_length,), n, dtype=torch.long)
                buf[positions] = torch.as_tensor(values)
                getattr(module, name).copy_(buf)
            module.disallowed.copy_(self._disallowed_tokens(spec))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.token_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.token_embeddings = value

    def forward(self, input_ids: torch.LongTensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.LongTensor] = None, return_dict: Optional[bool] = None, **kwargs) -> MaskedLMOutput:
        """Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Sudoku tokens, 0 = mask.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 = attend.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): Targets; -100 is
                ignored. When given, ``loss`` is the mean cross-entropy (a plain MLM loss, for convenience).
        """
        length = self.config.max_position_embeddings
        if input_ids.dim() != 2 or input_ids.shape[1] != length:
            raise SudokuInputError(
                f"input_ids has shape {tuple(input_ids.shape)}; this {self.config.sudoku_spec.name} Sudoku model takes "
                f"(batch_size, {length}) tokens."
            )
        hidden = (self.token_embeddings(input_ids) + self.row_embeddings(self.row_ids) + self.col_embeddings(self.col_ids)
                  + self.box_embeddings(self.box_ids))
        attn_mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for block in self.blocks:
            hidden = block(hidden, attn_mask)
        hidden = self.norm(hidden)
        logits = self.lm_head(hidden).masked_fill(self.disallowed, -1e4)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return MaskedLMOutput(loss=loss, logits=logits)


AutoConfig.register(SUDOKU_MODEL_TYPE, SudokuMDMConfig, exist_ok=True)
AutoModelForMaskedLM.register(SudokuMDMConfig, SudokuMDMForMaskedLM, exist_ok=True)
register_family(
    BackboneFamily(
        name="sudoku-mdm",
        model_types=(SUDOKU_MODEL_TYPE,),
        auto_class="AutoModelForMaskedLM",
        hidden_state_module="norm",
    )
)
