"""Run examples/embeddings.jsonl as a batch and show each sentence's nearest neighbour.

Start batchd first:  batchd serve --upstream local
Then:                pip install -e '.[examples]' && python examples/embeddings_batch.py

Like the openai SDK, it goes to $OPENAI_BASE_URL with $OPENAI_API_KEY when they are set;
--base-url and --api-key override them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from openai import OpenAI

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    )
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "local"))
    parser.add_argument("--input", type=Path, default=HERE / "embeddings.jsonl")
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    uploaded = client.files.create(file=args.input.open("rb"), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    print(f"batch {batch.id}: {batch.status}")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    print(f"batch {batch.id}: {batch.status}, {batch.request_counts}")
    if not batch.output_file_id:
        raise SystemExit(1)

    texts = {}
    for line in args.input.read_text().splitlines():
        request = json.loads(line)
        texts[request["custom_id"]] = request["body"]["input"]
    vectors = {}
    for line in client.files.content(batch.output_file_id).text.splitlines():
        result = json.loads(line)
        vectors[result["custom_id"]] = result["response"]["body"]["data"][0]["embedding"]

    for custom_id, vector in vectors.items():
        score, nearest = max(
            (_dot(vector, other), other_id)
            for other_id, other in vectors.items()
            if other_id != custom_id
        )
        print(f"{texts[custom_id]!r:50} ~ {texts[nearest]!r} ({score:.2f})")


def _dot(a: list[float], b: list[float]) -> float:
    # The vectors have unit length, so the dot product is the cosine similarity.
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


if __name__ == "__main__":
    main()
