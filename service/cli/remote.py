"""`tuneserve files ...` and `tuneserve jobs ...`: the job API of a running service, over HTTP.

Plain urllib, so the commands need nothing the service does not already install. The service
is found at --url, else TUNESERVE_URL, else http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.cli.progress import bar

TERMINAL = ("succeeded", "failed", "cancelled")


class ApiError(Exception):
    pass


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None):
        self.url = (url or os.environ.get("TUNESERVE_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.api_key = api_key or os.environ.get("TUNESERVE_API_KEY")

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
        headers = {"accept": "application/json"}
        if ctype:
            headers["content-type"] = ctype
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())["error"]
                raise ApiError(f"HTTP {exc.code} {err.get('type')}: {err.get('message')}") from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(f"HTTP {exc.code} from {self.url}{path}") from None
        except urllib.error.URLError as exc:
            raise ApiError(f"cannot reach {self.url}: {exc.reason} (is `make run` up?)") from None

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, payload: dict | None = None):
        return self.request("POST", path, json.dumps(payload or {}).encode(), "application/json")

    def upload(self, path: Path, purpose: str) -> dict:
        boundary = "tuneserve-" + secrets.token_hex(8)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", "/v1/files", body, f"multipart/form-data; boundary={boundary}")


def _print_job(job: dict) -> None:
    print(
        f"{job['id']}  {job['status']:16} {job['task']:20} from {job['model']}"
        + (f" -> {job['fine_tuned_model']}" if job.get("fine_tuned_model") else "")
    )
    if job.get("error"):
        print(f"  error: {job['error']['code']}: {job['error']['message']}")
    report = job.get("report") or {}
    for key, gain in (report.get("improvement") or {}).items():
        score, zero = report["metrics"][key], report["baseline"][key]
        print(f"  {key}: {score:.4g}  ({job['model']} zero-shot {zero:.4g}, {gain:+.4g})")


def follow(client: Client, job_id: str, *, poll_s: float = 2.0) -> dict:
    """Print a job's events as they come, with a progress line, until the job ends."""
    seen: set[str] = set()
    while True:
        page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?limit=100")["data"]
        for ev in reversed(page):  # the API lists newest first
            if ev["id"] in seen:
                continue
            seen.add(ev["id"])
            data = ev.get("data") or {}
            if ev["type"] == "metrics" and "total_steps" in data:
                done, total = data["step"], data["total_steps"] or 1
                print(
                    f"\r{bar(done, total)} step {done}/{total} loss {data['train_loss']:.4f}   ",
                    end="",
                )
            else:
                print(f"\n{ev['level']:5} {ev['message']}", end="")
        sys.stdout.flush()
        job = client.get(f"/v1/fine_tuning/jobs/{job_id}")
        if job["status"] in TERMINAL:
            print()
            _print_job(job)
            return job
        time.sleep(poll_s)


def cmd_files(args: argparse.Namespace) -> int:
    client = Client(args.url)
    if args.files_command == "upload":
        f = client.upload(Path(args.path), args.purpose)
        labels = f" labels {f['labels']}" if f.get("labels") else ""
        print(f"{f['id']}  {f['filename']}: {f['format']}, {f['rows']} rows{labels}")
    else:
        for f in client.get("/v1/files")["data"]:
            print(
                f"{f['id']}  {f['purpose']:9} {f['format']:14} {f['rows']:>8} rows  {f['filename']}"
            )
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    client = Client(args.url)
    cmd = args.jobs_command
    if cmd == "create":
        training = args.training_file
        if Path(training).is_file():  # a local file: upload it first
            purpose = "pretrain" if args.task == "masked-lm" else "fine-tune"
            training = client.upload(Path(training), purpose)["id"]
            print(f"uploaded {args.training_file} as {training}")
        body: dict = {"model": args.model, "training_file": training}
        if args.validation_file:
            vf = args.validation_file
            if Path(vf).is_file():
                vf = client.upload(Path(vf), "fine-tune")["id"]
            body["validation_file"] = vf
        hp = {
            k: v
            for k, v in {
                "n_epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate_multiplier": args.lr_multiplier,
                "max_seq_length": args.max_length,
            }.items()
            if v is not None
        }
        if hp:
            body["hyperparameters"] = hp
        for key in ("task", "suffix", "seed"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        if args.method:
            body["training_method"] = args.method
        job = client.post("/v1/fine_tuning/jobs", body)
        _print_job(job)
        if args.follow:
            job = follow(client, job["id"])
            return 0 if job["status"] == "succeeded" else 1
    elif cmd == "list":
        for job in client.get(f"/v1/fine_tuning/jobs?limit={args.limit}")["data"]:
            _print_job(job)
    elif cmd == "get":
        print(json.dumps(client.get(f"/v1/fine_tuning/jobs/{args.job_id}"), indent=2))
    elif cmd == "cancel":
        _print_job(client.post(f"/v1/fine_tuning/jobs/{args.job_id}/cancel"))
    elif cmd == "events":
        if args.follow:
            follow(client, args.job_id)
        else:
            page = client.get(f"/v1/fine_tuning/jobs/{args.job_id}/events?limit={args.limit}")
            for ev in reversed(page["data"]):
                stamp = time.strftime("%H:%M:%S", time.localtime(ev["created_at"]))
                print(f"{stamp} {ev['level']:5} {ev['message']}")
    return 0


def add_commands(sub) -> None:
    """Register `files` and `jobs` on the CLI's subparsers."""

    def url(p):
        p.add_argument("--url", help="the service (default $TUNESERVE_URL or 127.0.0.1:8000)")

    files = sub.add_parser("files", help="upload and list datasets on a running service")
    fsub = files.add_subparsers(dest="files_command", required=True)
    up = fsub.add_parser("upload", help="upload a dataset (checked before it is accepted)")
    up.add_argument("path")
    up.add_argument("--purpose", default="fine-tune", choices=["fine-tune", "pretrain"])
    url(up)
    url(fsub.add_parser("list", help="list uploaded files"))
    files.set_defaults(func=cmd_files)

    jobs = sub.add_parser("jobs", help="create and follow fine-tuning jobs on a running service")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    cr = jsub.add_parser("create", help="create a job (a local training file is uploaded)")
    cr.add_argument("--training-file", required=True, help="a file id, or a local file")
    cr.add_argument("--validation-file")
    cr.add_argument("--model", default="base")
    cr.add_argument(
        "--task", choices=["text-classification", "extractive-qa", "masked-lm"], default=None
    )
    cr.add_argument("--suffix")
    cr.add_argument(
        "--method",
        choices=["auto", "full", "head"],
        help="classification: head (seconds, kilobytes) or full (every weight); auto: by data size",
    )
    cr.add_argument("--seed", type=int)
    cr.add_argument("--epochs", type=float)
    cr.add_argument("--batch-size", type=int)
    cr.add_argument("--lr-multiplier", type=float)
    cr.add_argument("--max-length", type=int)
    cr.add_argument("--follow", action="store_true", help="show progress until the job ends")
    url(cr)
    ls = jsub.add_parser("list", help="list jobs, newest first")
    ls.add_argument("--limit", type=int, default=20)
    url(ls)
    for name, text in (("get", "show a job"), ("cancel", "cancel a job")):
        c = jsub.add_parser(name, help=text)
        c.add_argument("job_id")
        url(c)
    ev = jsub.add_parser("events", help="a job's events, oldest first")
    ev.add_argument("job_id")
    ev.add_argument("--limit", type=int, default=100)
    ev.add_argument("--follow", action="store_true")
    url(ev)
    jobs.set_defaults(func=cmd_jobs)
