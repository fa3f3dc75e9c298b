"""The image's smoke test, over HTTP against a running container (deploy/image/test.sh):
ready, `base` classifies, a head-method and a full fine-tuning job run to the end through
the job API (the full one trains with Ray Train and torch and exports to ONNX inside the
container), and their models classify. Prints what each step took; exits non-zero on the first
failure."""

from __future__ import annotations

import json
import sys
import time

import httpx

TICKETS = [
    ("I was charged twice this month", "billing"),
    ("Please refund my last invoice", "billing"),
    ("Why is my bill higher than last month?", "billing"),
    ("My card was declined but I was still charged", "billing"),
    ("The app crashes when I open settings", "bug"),
    ("Error 500 when uploading a photo", "bug"),
    ("The page freezes after the update", "bug"),
    ("Notifications stopped working yesterday", "bug"),
]


def wait_ready(http: httpx.Client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    raise SystemExit(f"not ready after {timeout_s:.0f} s")


def check(r: httpx.Response, what: str) -> dict:
    if r.status_code >= 300:
        raise SystemExit(f"{what}: {r.status_code} {r.text}")
    return r.json()


def main(url: str) -> None:
    http = httpx.Client(base_url=url, timeout=60)
    t = time.monotonic()
    wait_ready(http, 900)
    print(f"ready after {time.monotonic() - t:.0f} s")
    # the console's static files are package data: a non-editable install must carry them
    page = http.get("/console/")
    if page.status_code != 200 or "<title>tuneserve console</title>" not in page.text:
        raise SystemExit(f"the console: {page.status_code} {page.text[:200]}")
    print("console served at /console/")
    body = {"model": "base", "inputs": ["a wonderful film"], "labels": ["positive", "negative"]}
    result = check(http.post("/v1/classify", json=body), "classify with base")["results"][0]
    print(f"base zero-shot: {result['label']} {result['score']:.2f}")
    data = "".join(json.dumps({"text": x, "label": y}) + "\n" for x, y in TICKETS)
    files = {"file": ("tickets.jsonl", data.encode())}
    f = check(http.post("/v1/files", data={"purpose": "fine-tune"}, files=files), "upload")
    # a head job (the base's graph, seconds), then a full one: Ray Train and torch in the
    # container, the export to ONNX, its three graphs and their parity
    for method, hyperparameters in (
        ("head", {}),
        ("full", {"n_epochs": 1, "batch_size": 4, "cv_folds": 0}),
    ):
        model = run_job(http, f["id"], method, hyperparameters)
        body = {"model": model, "inputs": ["I was billed two times"]}
        result = check(http.post("/v1/classify", json=body), f"classify with the {method} model")
        print(f"{method}: {result['results'][0]['label']} {result['results'][0]['score']:.2f}")


def run_job(http: httpx.Client, file_id: str, method: str, hyperparameters: dict) -> str:
    """A fine-tuning job through the job API, followed to its end; its model's id."""
    job = {"model": "base", "training_file": file_id, "task": "text-classification",
           "training_method": method, "suffix": f"image-{method}",
           "hyperparameters": hyperparameters}  # fmt: skip
    t = time.monotonic()
    job = check(http.post("/v1/fine_tuning/jobs", json=job), f"create the {method} job")
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() - t > 600:
            raise SystemExit(f"job {job['id']} still {job['status']} after 600 s")
        time.sleep(2)
        job = check(http.get(f"/v1/fine_tuning/jobs/{job['id']}"), "read the job")
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['id']} {job['status']}: {job.get('error')}")
    took = time.monotonic() - t
    print(f"{method} job {job['id']} succeeded in {took:.0f} s: {job['fine_tuned_model']}")
    return job["fine_tuned_model"]


if __name__ == "__main__":
    main(sys.argv[1])
