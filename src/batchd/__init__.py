"""batchd: the OpenAI Batch API, self-hosted, in front of any OpenAI-compatible model server."""

__version__ = "0.1.0"
