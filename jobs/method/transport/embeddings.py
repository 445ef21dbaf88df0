"""Embeddings for semantic deduplication: any OpenAI-compatible `/v1/embeddings` (a profile's
`embeddings`; the embedded default is all-MiniLM-L6-v2 on llama.cpp's server, jobs.tools.embedding_model).

Texts go in requests of `batch` texts, at most `concurrency` requests at once, retried as completions
are (429 with Retry-After, 5xx, timeouts); vectors come back L2-normalised (some providers do not), so a
dot product is their cosine. The run's usage counts the requests as the stage `embeddings` and their
tokens apart (`embedding_tokens`), priced at the embedding endpoint's own price.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from jobs.method.endpoint import EMBEDDINGS_STAGE as STAGE
from jobs.method.endpoint import EmbeddingEndpoint
from jobs.method.transport.client import EndpointError, _describe, _error_kind, _retryable, retry_wait
from jobs.method.transport.usage import Usage


class Embedder:
    """Embeds texts through one endpoint, with at most `concurrency` requests in flight."""

    def __init__(self, endpoint: EmbeddingEndpoint, usage: Usage, concurrency: int):
        self.endpoint = endpoint
        self.usage = usage
        self._slots = asyncio.Semaphore(concurrency)
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,
            timeout=httpx.Timeout(endpoint.timeout, connect=min(10.0, endpoint.timeout)),
        )

    async def close(self) -> None:
        await self._client.close()

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One unit vector (float32) a text, in order; an empty list gives an empty (0, 0) array."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        size = self.endpoint.batch
        parts = await asyncio.gather(
            *(self._request(texts[i : i + size]) for i in range(0, len(texts), size))
        )
        vectors = np.vstack(parts).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    async def _request(self, texts: list[str]) -> np.ndarray:
        cut = [t[: self.endpoint.max_chars] for t in texts]
        async with self._slots:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_retryable),
                    stop=stop_after_attempt(self.endpoint.max_attempts),
                    wait=self._wait,
                    before_sleep=lambda _: self._retried(),
                    reraise=True,
                ):
                    with attempt:
                        response = await self._client.embeddings.create(
                            model=self.endpoint.model, input=cut, encoding_format="float"
                        )
            except openai.OpenAIError as exc:
                raise EndpointError(
                    f"{STAGE} request failed ({_error_kind(exc)}): {_describe(exc)}"
                ) from None
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(cut):
            raise EndpointError(f"{STAGE} request: {len(data)} vectors for {len(cut)} texts")
        self.usage.requests[STAGE] += 1
        self.usage.embedding_tokens += response.usage.prompt_tokens if response.usage else 0
        return np.array([d.embedding for d in data], dtype=np.float32)

    def _wait(self, state: RetryCallState) -> float:
        return retry_wait(state, self.endpoint.max_wait)

    def _retried(self) -> None:
        self.usage.retries += 1
