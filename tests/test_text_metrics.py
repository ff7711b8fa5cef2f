"""Text metrics (Gen PPL, unigram entropy, MAUVE, plot) on tiny in-process models; no network."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from prism_hf.evaluation.text_metrics import (
    check_causal_lm,
    decode_samples,
    generative_perplexity,
    load_causal_lm,
    mauve_score,
    per_sample_unigram_entropy,
    plot_metrics_vs_nfe,
    text_features,
    unigram_entropy,
)
from prism_hf.testing import tiny_bert, tiny_char_tokenizer, tiny_mdlm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from text_corpus import synthetic_lines, word_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def char_tok():
    return tiny_char_tokenizer()


@pytest.fixture(scope="module")
def tiny_gpt2(char_tok):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(char_tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        eos_token_id=char_tok.eos_token_id, bos_token_id=char_tok.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def _reference_ppl(model, tokenizer, texts):
    """Mean token NLL via the model's own shifted loss, one text at a time (no padding, no windows)."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        total += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(total / count), count


def test_gen_ppl_matches_reference_and_is_batch_invariant(tiny_gpt2, char_tok):
    texts = ["the cat sees a ship .", "a quiet river", "every old teacher paints some letter slowly ."]
    ref, count = _reference_ppl(tiny_gpt2, char_tok, texts)
    one = generative_perplexity(texts, tiny_gpt2, char_tok, batch_size=1)
    many = generative_perplexity(texts, tiny_gpt2, char_tok, batch_size=3)
    assert one.num_tokens == many.num_tokens == count
    assert one.gen_ppl == pytest.approx(ref, rel=1e-4)
    assert many.gen_ppl == pytest.approx(ref, rel=1e-4)  # right padding is masked out
    assert len(many.per_sample_ppl) == 3 and all(p > 1 for p in many.per_sample_ppl)
    # A random model over 105 tokens is close to uniform: Gen PPL near the vocabulary size, not near 1.
    assert 50 < many.gen_ppl < 250


def test_gen_ppl_windows_score_each_chunk_independently(tiny_gpt2, char_tok):
    text = "the bright machine follows every green garden ."  # 48 chars
    out = generative_perplexity([text], tiny_gpt2, char_tok, context_length=16)
    ids = char_tok(text, add_special_tokens=False)["input_ids"]
    chunks = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    ref, count = _reference_ppl(tiny_gpt2, char_tok, [char_tok.decode(c) for c in chunks])
    assert out.num_tokens == count == len(ids) - len(chunks)
    assert out.gen_ppl == pytest.approx(ref, rel=1e-4)


def test_gen_ppl_scores_only_first_eos(tiny_gpt2, char_tok):
    eos = char_tok.eos_token
    text = "a cat" + eos + eos + eos
    first_only = generative_perplexity([text], tiny_gpt2, char_tok)
    every = generative_perplexity([text], tiny_gpt2, char_tok, first_eos_only=False)
    assert every.num_tokens == 7  # 8 tokens, first unscored
    assert first_only.num_tokens == 5  # the second and third EOS are not scored


def test_retokenisation_from_generator_ids(tiny_gpt2, char_tok):
    """Samples in the MDM's word ids are decoded, then re-tokenised by the judge's char tokenizer."""
    word_tok = word_tokenizer()
    mask_id = len(word_tok)  # MDLM convention: the id after the tokenizer's vocabulary
    ids = torch.tensor([word_tok("the cat sees a ship .")["input_ids"] + [mask_id]])
    texts = decode_samples(ids, word_tok, mask_token_id=mask_id)
    assert texts == ["the cat sees a ship ."]
    out = generative_perplexity(texts, tiny_gpt2, char_tok)
    assert out.num_tokens == len("the cat sees a ship .") - 1


def test_non_causal_eval_model_is_rejected(char_tok):
    with pytest.raises(ValueError, match="not a causal language model"):
        generative_perplexity(["a cat"], tiny_bert(vocab_size=len(char_tok)), char_tok)
    # MDLM's forward needs `timesteps`, like the upstream remote code: refused before any probing.
    with pytest.raises(ValueError, match=r"eval_model=MDLMForMaskedLM cannot be called as model\(input_ids=...\)"):
        check_causal_lm(tiny_mdlm())


def test_causal_check_accepts_gpt2_and_needs_tokenizer(tiny_gpt2):
    check_causal_lm(tiny_gpt2)
    with pytest.raises(ValueError, match="no tokenizer"):
        load_causal_lm(tiny_gpt2, None)
    with pytest.raises(TypeError, match="list of strings"):
        generative_perplexity("a single string", tiny_gpt2, tiny_char_tokenizer())
    with pytest.raises(TypeError, match="decode token ids first"):
        generative_perplexity([[1, 2, 3]], tiny_gpt2, tiny_char_tokenizer())


def test_unigram_entropy_known_values_and_batched_equals_loop():
    ids = torch.tensor([[5, 5, 5, 5], [1, 2, 3, 4], [7, 7, 8, 8]])
    values = per_sample_unigram_entropy(ids)
    assert values.tolist() == pytest.approx([0.0, math.log(4), math.log(2)], abs=1e-6)
    assert unigram_entropy(ids) == pytest.approx((math.log(4) + math.log(2)) / 3, abs=1e-6)
    # Ragged rows and ignored ids.
    assert per_sample_unigram_entropy([[1, 2], [3, 3, 3, 9]], ignore_token_ids=[9]).tolist() == pytest.approx([math.log(2), 0.0])
    # Against a per-row reference on random data.
    rand = torch.randint(0, 30, (16, 50), generator=torch.Generator().manual_seed(1))
    expected = []
    for row in rand:
        _, counts = torch.unique(row, return_counts=True)
        p = counts.double() / counts.sum()
        expected.append(float(-(p * p.log()).sum()))
    assert per_sample_unigram_entropy(rand).tolist() == pytest.approx(expected, abs=1e-5)


def test_mauve_on_tiny_features():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 8)).astype(np.float32)
    same = mauve_score(p_features=base[:30], q_features=base[30:], num_buckets=3, kmeans_num_redo=1)
    shifted = mauve_score(p_features=base[:30] + 6.0, q_features=base[30:], num_buckets=3, kmeans_num_redo=1)
    assert same.mauve > 0.8
    assert shifted.mauve < 0.2
    assert same.num_p == 30 and same.num_buckets == 3
    with pytest.raises(ValueError, match="at least 10 samples"):
        mauve_score(p_features=base[:5], q_features=base[30:], num_buckets=10)


def test_mauve_features_from_a_model(tiny_gpt2, char_tok):
    lines = synthetic_lines(40, seed=3)
    feats = text_features(lines, tiny_gpt2, char_tok, batch_size=16, max_length=60)
    assert feats.shape == (40, 32) and np.isfinite(feats).all()
    # Batched features equal one-at-a-time features (last real token picked correctly despite padding).
    single = text_features(lines[:3], tiny_gpt2, char_tok, batch_size=1, max_length=60)
    np.testing.assert_allclose(feats[:3], single, rtol=1e-4, atol=1e-5)
    out = mauve_score(lines[:20], lines[20:], feature_model=tiny_gpt2, feature_tokenizer=char_tok, max_length=60,
                      num_buckets=2, kmeans_num_redo=1)
    assert 0.0 < out.mauve <= 1.0


def test_plot_metrics_vs_nfe(tmp_path):
    rows = [
        {"rule": rule, "nfe": nfe, "mauve": m, "gen_ppl": g, "entropy": 5.0}
        for rule, base in (("prism", 0.1), ("remdm-cap", 0.05), ("vanilla", 0.01))
        for nfe, m, g in ((128, base, 60.0), (256, base * 2, 50.0), (512, base * 3, 40.0))
    ]
    path = plot_metrics_vs_nfe(rows, tmp_path / "fig" / "nfe.png")
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="'rule' and 'nfe'"):
        plot_metrics_vs_nfe([{"nfe": 1, "mauve": 0.1}], tmp_path / "x.png")
