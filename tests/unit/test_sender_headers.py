from urllib.parse import quote, unquote

import pytest

from batchd.worker.senders import _header_safe


@pytest.mark.parametrize("custom_id", ["request-1", "r_2.3~x", "ABC", ""])
def test_a_plain_custom_id_goes_into_its_header_as_it_is(custom_id: str) -> None:
    assert _header_safe(custom_id) == custom_id


@pytest.mark.parametrize("custom_id", ["a b", "ü-1", "a/b", "50%", "line\nbreak", "😀"])
def test_any_other_custom_id_is_percent_encoded_and_comes_back_whole(custom_id: str) -> None:
    encoded = _header_safe(custom_id)
    assert encoded == quote(custom_id, safe="")
    assert encoded.isascii() and encoded.isprintable()
    assert unquote(encoded) == custom_id
