"""The id generator: prefixes, lengths, the base62 alphabet, and no repeats or bias."""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Callable

import pytest

from batchd import ids

ALPHABET = set(string.ascii_letters + string.digits)
SAMPLES = 20_000


@pytest.mark.parametrize(
    ("make", "prefix", "length"),
    [
        (ids.file_id, "file-", 22),
        (ids.batch_id, "batch_", 24),
        (ids.batch_request_id, "batch_req_", 24),
        (ids.request_id, "req_", 24),
        (ids.worker_id, "wrk_", 12),
    ],
)
def test_each_id_is_its_prefix_then_base62_digits(
    make: Callable[[], str], prefix: str, length: int
) -> None:
    """An id is the prefix followed by exactly ``length`` base62 characters."""
    for _ in range(100):
        made = make()
        assert made.startswith(prefix)
        digits = made.removeprefix(prefix)
        assert len(digits) == length and set(digits) <= ALPHABET


def test_ids_do_not_repeat() -> None:
    """Many ids drawn in a row are all distinct."""
    assert len({ids.batch_request_id() for _ in range(SAMPLES)}) == SAMPLES


def test_every_character_is_about_equally_likely() -> None:
    """Each of the 62 characters turns up within 15% of its fair share (no modulo bias, which
    would favour the first 8 characters by a quarter)."""
    counts = Counter("".join(ids.request_id()[4:] for _ in range(SAMPLES)))
    fair = SAMPLES * 24 / 62
    assert set(counts) == ALPHABET
    assert all(abs(n - fair) < 0.15 * fair for n in counts.values())


def test_a_draw_with_too_many_rejected_bytes_draws_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that would bias the digits are dropped, and more are drawn until there are enough."""
    draws = iter([bytes([255] * 10 + [0] * 10), bytes([61] * 12)])
    monkeypatch.setattr(ids.os, "urandom", lambda n: next(draws)[:n])
    assert ids.worker_id() == "wrk_" + "a" * 10 + "9" * 2
