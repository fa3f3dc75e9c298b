"""The baseline for bench/serve.py: a plain FastAPI app serving a fine-tuned classifier with
`transformers.pipeline` (PyTorch), the way a team would without tuneserve.

    BASELINE_MODEL=<model folder> uvicorn bench.baseline_app:app --host 127.0.0.1 --port 8100
"""

import os
from pathlib import Path

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast, pipeline

folder = Path(os.environ["BASELINE_MODEL"])
torch.set_num_threads(int(os.environ.get("BASELINE_THREADS", os.cpu_count() or 1)))
tokenizer = PreTrainedTokenizerFast(
    tokenizer_file=str(folder / "tokenizer" / "tokenizer.json"),
    unk_token="[UNK]",
    cls_token="[CLS]",
    sep_token="[SEP]",
    pad_token="[PAD]",
    mask_token="[MASK]",
)
model = AutoModelForSequenceClassification.from_pretrained(str(folder / "hf"))
classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
app = FastAPI()


class Body(BaseModel):
    model: str | None = None
    inputs: list[str]


@app.post("/v1/classify")
def classify(body: Body) -> dict:
    out = classifier(body.inputs, truncation=True, max_length=128)
    return {"results": [{"label": r["label"], "score": r["score"]} for r in out]}
