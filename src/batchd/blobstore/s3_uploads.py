"""Multipart uploads a dead process left unfinished: listed (ListMultipartUploads) and aborted
(AbortMultipartUpload), the two S3 calls obstore does not make. They run from housekeeping, once an
hour, so a plain signed request (AWS Signature Version 4) over httpx does: credentials, endpoint and
region come from the same AWS variables the client reads. Credentials from elsewhere (an instance
profile, a web identity) sign obstore's requests but not these: then unfinished uploads are left
to the bucket's lifecycle rule, and a warning says so.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx

log = logging.getLogger("batchd.blobstore")

_NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Credentials:
    endpoint: str
    region: str
    access_key: str
    secret_key: str
    token: str | None

    @classmethod
    def from_env(cls) -> Credentials:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return cls(
            endpoint=(endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/"),
            region=region,
            access_key=os.environ.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            token=os.environ.get("AWS_SESSION_TOKEN"),
        )


@dataclass(frozen=True)
class Upload:
    key: str
    upload_id: str
    initiated: float


BATCHD_KEYS = ("files/", "batches/")
"""Where batchd writes under its prefix (``files.upload_key``, result parts and files)."""


class Uploads:
    def __init__(self, bucket: str, prefix: str) -> None:
        self._bucket = bucket
        self._prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    async def abort_older_than(self, before: float) -> int:
        """Abort every unfinished upload of batchd's under the prefix begun before ``before``
        (uploads of other keys in the bucket are not batchd's to end); how many."""
        credentials = Credentials.from_env()
        if not credentials.access_key:
            log.warning("unfinished_uploads_left: no AWS_ACCESS_KEY_ID to sign their listing with")
            return 0
        aborted = 0
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                signer = _Signer(credentials, client)
                async for upload in self._unfinished(signer):
                    if upload.initiated < before and upload.key.removeprefix(
                        self._prefix
                    ).startswith(BATCHD_KEYS):
                        await signer.send(
                            "DELETE", f"/{self._bucket}/{upload.key}", uploadId=upload.upload_id
                        )
                        aborted += 1
        except httpx.HTTPError as exc:
            raise OSError(f"could not discard unfinished uploads: {exc}") from exc
        return aborted

    async def _unfinished(self, signer: _Signer) -> AsyncIterator[Upload]:
        markers: dict[str, str] = {}
        while True:
            query = {"uploads": "", "prefix": self._prefix, **markers}
            page = ElementTree.fromstring(  # noqa: S314 - the operator's own object store
                await signer.send("GET", f"/{self._bucket}", **query)
            )
            for upload in page.iterfind("s3:Upload", _NS):
                yield _upload_of(upload)
            if page.findtext("s3:IsTruncated", "false", _NS) != "true":
                return
            markers = {
                "key-marker": page.findtext("s3:NextKeyMarker", "", _NS),
                "upload-id-marker": page.findtext("s3:NextUploadIdMarker", "", _NS),
            }


def _upload_of(element: ElementTree.Element) -> Upload:
    initiated = datetime.fromisoformat(element.findtext("s3:Initiated", "", _NS))
    return Upload(
        key=element.findtext("s3:Key", "", _NS),
        upload_id=element.findtext("s3:UploadId", "", _NS),
        initiated=initiated.timestamp(),
    )


class _Signer:
    """Path-style requests signed with AWS Signature Version 4, without a body."""

    def __init__(self, credentials: Credentials, client: httpx.AsyncClient) -> None:
        self._credentials = credentials
        self._client = client
        self._host = urlsplit(credentials.endpoint).netloc

    async def send(self, method: str, path: str, **query: str) -> bytes:
        uri = quote(path, safe="/~")
        canonical_query = "&".join(
            f"{quote(name, safe='~')}={quote(value, safe='~')}"
            for name, value in sorted(query.items())
        )
        headers = self._headers(method, uri, canonical_query)
        url = f"{self._credentials.endpoint}{uri}?{canonical_query}"
        response = await self._client.request(method, url, headers=headers)
        if response.status_code >= 300 and response.status_code != 404:  # 404: already gone
            raise httpx.HTTPStatusError(
                f"{method} {path}: {response.status_code} {response.text[:300]}",
                request=response.request,
                response=response,
            )
        return response.content

    def _headers(self, method: str, uri: str, query: str) -> dict[str, str]:
        now = datetime.now(UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
        if self._credentials.token:
            headers["x-amz-security-token"] = self._credentials.token
        names = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                uri,
                query,
                *(f"{n}:{headers[n]}" for n in sorted(headers)),
                "",
                names,
                _EMPTY_SHA256,
            ]
        )
        scope = f"{day}/{self._credentials.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(self._key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        del headers["host"]  # httpx sends it, from the URL
        return headers

    def _key(self, day: str) -> bytes:
        key = ("AWS4" + self._credentials.secret_key).encode()
        for part in (day, self._credentials.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key
