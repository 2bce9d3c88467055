"""The body a line's request is sent with: the bytes of its ``body`` as they stand in the line."""

from batchd.worker.feeder import _body_of


def test_the_body_is_forwarded_byte_for_byte() -> None:
    """Spacing, key order, number spellings and integers beyond 64 bits reach the model server as
    the user wrote them: the body is cut out of its line, not parsed and written again."""
    body = b'{"model": "m",  "temperature": 1.50, "seed": 123456789012345678901234567890, "a": 1e2}'
    line = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": ' + body
    assert _body_of(line + b"}") == body


def test_a_line_that_cannot_be_read_back_gives_no_body() -> None:
    """A line gone bad since validation (the input blob changed under it) is not sent."""
    assert _body_of(b'{"custom_id": "r1", "body": ') is None
    assert _body_of(b'{"custom_id": "r1"}') is None
    assert _body_of(None) is None
