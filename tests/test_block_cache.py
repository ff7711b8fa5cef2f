"""BlockKVCache in the native LLaDA and Dream ports: what is exact, what is an approximation, and bad input.

* Right after a fill, a window forward (any positions per row, padded batches included) gives the logits of the
  uncached forward at those positions: the cache changes nothing while the sequence is unchanged.
* With one layer, the keys and values of a position depend on its own token only, so a window forward stays exact
  after the window's tokens change; with two or more layers it becomes an approximation (the documented trade-off).
"""

import pytest
import torch

from prism_hf.models.cache import BlockKVCache
from prism_hf.testing import tiny_dream, tiny_llada

BUILDERS = {"llada": tiny_llada, "dream": tiny_dream}
# float32 matmuls over width 32 and a softmax over <= 24 keys: differences of a few ulps of the logits' scale.
ATOL, RTOL = 1e-5, 1e-5


def _model(family, **kwargs):
    return BUILDERS[family](vocab_size=64, seed=1, **kwargs).eval()


def _padded_batch(seed=0, length=20):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (3, length), generator=g)
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, 15:] = 0  # right padding, as PrismPipeline lays rows out
    mask[2, 12:] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.mark.parametrize("family", sorted(BUILDERS))
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_window_forward_right_after_a_fill_equals_the_uncached_forward(family, implementation):
    model = _model(family, attn_implementation=implementation)
    ids, mask = _padded_batch()
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = BlockKVCache()
        filled = model(ids, attention_mask=mask, cache=cache)
        torch.testing.assert_close(filled.logits, full, rtol=0, atol=0)
        assert filled.cache is cache and cache.is_filled and cache.seq_length == ids.shape[1]
        # a different block per row (rows of a padded batch have their active block at different columns)
        positions = torch.stack([torch.arange(4, 8), torch.arange(8, 12), torch.arange(2, 6)])
        cache.set_window(positions)
        window = model(ids.gather(1, positions), attention_mask=mask, cache=cache).logits
    torch.testing.assert_close(window, full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1])), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_one_layer_models_stay_exact_when_the_window_changes(family):
    """Layer-0 keys of the positions outside the window depend on their own tokens only."""
    model = _model(family, **({"n_layers": 1} if family == "llada" else {"num_layers": 1}))
    ids, mask = _padded_batch(seed=1)
    positions = torch.arange(6, 10).expand(3, -1)
    with torch.no_grad():
        cache = BlockKVCache()
        model(ids, attention_mask=mask, cache=cache)
        changed = ids.clone()
        changed[:, 6:10] = torch.tensor([61, 62, 3, 4])  # new tokens in the window only
        cache.set_window(positions)
        window = model(changed[:, 6:10], attention_mask=mask, cache=cache).logits
        full = model(changed, attention_mask=mask).logits
    torch.testing.assert_close(window, full[:, 6:10], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_deeper_models_are_approximate_after_the_window_changes(family):
    """The documented approximation: keys cached before the window changed describe the old tokens from layer 1 on."""
    model = _model(family)
    ids, mask = _padded_batch(seed=2)
    with torch.no_grad():
        cache = BlockKVCache()
        model(ids, attention_mask=mask, cache=cache)
        changed = ids.clone()
        changed[:, 6:10] = torch.tensor([61, 62, 3, 4])
        cache.set_window(torch.arange(6, 10).expand(3, -1))
        window = model(changed[:, 6:10], attention_mask=mask, cache=cache).logits
        full = model(changed, attention_mask=mask).logits
    assert (window - full[:, 6:10]).abs().max() > 1e-4


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_use_cache_creates_and_returns_a_filled_cache(family):
    model = _model(family)
    ids, _ = _padded_batch()
    with torch.no_grad():
        out = model(ids, use_cache=True)
        legacy = model(ids, past_key_values=BlockKVCache())  # the transformers 4 / Fast-dLLM name
    assert isinstance(out.cache, BlockKVCache) and out.cache.is_filled
    assert isinstance(legacy.cache, BlockKVCache) and legacy.cache.is_filled
    assert model(ids).cache is None


# ----- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_window_forward_bad_input(family):
    model = _model(family)
    ids, mask = _padded_batch()
    cache = BlockKVCache()
    with pytest.raises(ValueError, match="the cache is empty"):
        cache.set_window(torch.arange(4)[None])
    with torch.no_grad():
        model(ids, attention_mask=mask, cache=cache)
    with pytest.raises(ValueError, match=r"positions has 1 rows; the cache holds 3"):
        cache.set_window(torch.arange(4)[None])
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 20\)"):
        cache.set_window(torch.arange(18, 22).expand(3, -1))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        cache.set_window(torch.zeros(3, 4))
    cache.set_window(torch.arange(4, 8).expand(3, -1))
    with pytest.raises(ValueError, match=r"window holds positions of shape \(3, 4\).*input of shape \(3, 5\)"):
        model(ids[:, :5], cache=cache)
    with pytest.raises(ValueError, match=r"padding mask of the whole cached sequence, \(3, 20\)"):
        model(ids[:, 4:8], attention_mask=mask[:, 4:8], cache=cache)
    with pytest.raises(ValueError, match="not both"):
        model(ids[:, 4:8], cache=cache, past_key_values=cache)
    with pytest.raises(ValueError, match="cache must be a prism_hf.models.cache.BlockKVCache; got dict"):
        model(ids, cache={})
