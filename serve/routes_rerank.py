"""Reranking with a cross-encoder artifact: the Cohere/Jina-style ``/v1/rerank`` and text-embeddings-inference's
``/rerank``, both backed by ``Model.relevance`` (the scores sentence-transformers' ``CrossEncoder.rank`` gives)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from onnxformer.serve.httpio import within
from onnxformer.serve.routes_v1 import parse_request
from onnxformer.serve.schemas import RerankRequest, TEIRerankRequest

router = APIRouter()


@router.post("/v1/rerank")
async def rerank(request: Request) -> JSONResponse:
    state, req = await parse_request(request, RerankRequest)  # ready and 429 before the body, as every route
    service = state.model_service("/v1/rerank", req.model)
    scores, tokens = await within(state.config.timeout_s, service.relevance(req.query, req.documents))
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])[: req.top_n]
    results: list[dict[str, Any]] = [
        {"index": i, "relevance_score": float(scores[i]),
         **({"document": {"text": req.documents[i]}} if req.return_documents else {})} for i in ranked]
    return JSONResponse({"model": service.name, "results": results, "usage": {"total_tokens": tokens}})


@router.post("/rerank")
async def rerank_tei(request: Request) -> JSONResponse:
    state, req = await parse_request(request, TEIRerankRequest)
    service = state.model_service("/rerank")
    scores, _ = await within(state.config.timeout_s,
                             service.relevance(req.query, req.texts, truncate=req.truncate, raw=req.raw_scores))
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    return JSONResponse([{"index": i, "score": float(scores[i]), **({"text": req.texts[i]} if req.return_text else {})}
                         for i in ranked])
