"""The real embedded model, loaded once for the session."""

from __future__ import annotations

import pytest

from batchd.upstreams.sentence import SentenceEmbedder


@pytest.fixture(scope="session")
def embedder(local_extra: None) -> SentenceEmbedder:
    return SentenceEmbedder.load(None, batch_size=16)
