"""The embeddings baseline for bench/embeddings.py: a plain FastAPI app serving the bundled
all-MiniLM-L6-v2 with `sentence_transformers` (PyTorch), in OpenAI's /v1/embeddings shape, the
way a team would without tuneserve.

    uvicorn bench.baseline_embed_app:app --host 127.0.0.1 --port 8101
"""

import os

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

from training.encoders import bundled_encoder_path

torch.set_num_threads(int(os.environ.get("BASELINE_THREADS", os.cpu_count() or 1)))
encoder = SentenceTransformer(str(bundled_encoder_path()), device="cpu")
app = FastAPI()


class Body(BaseModel):
    model: str
    input: str | list[str]


@app.post("/v1/embeddings")
def embeddings(body: Body) -> dict:
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    data = [
        {"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)
    ]
    return {"object": "list", "data": data, "model": body.model}
