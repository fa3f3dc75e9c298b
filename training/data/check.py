"""An upload's check: what its purpose and its first line say it is, read whole, bounded, and
kept nowhere. The service runs it in a process of its own (service/files.py)."""

from __future__ import annotations

from pathlib import Path

from training.data.classification import check_classification
from training.data.corpus import check_corpus
from training.data.squad import check_squad
from training.data.text import DataError, Limits, sniff_format

NOT_A_DATASET = (
    "a fine-tune file must be classification JSON Lines "
    '({"text": ..., "label": ...} a line) or SQuAD v1.1 JSON; for raw text to pretrain '
    'on, upload it with purpose "pretrain"'
)


def check_upload(path: Path, purpose: str, limits: Limits) -> tuple[str, int, list[str] | None]:
    """(format, rows, labels) of an uploaded file, or DataError naming the lines at fault."""
    if purpose == "pretrain":
        return "corpus", check_corpus(path, limits), None
    kind = sniff_format(path, limits)
    if kind == "classification":
        rows, labels = check_classification(path, limits)
        return kind, rows, labels
    if kind == "squad":
        return kind, check_squad(path, limits), None
    raise DataError(path, [f"{path.name}: {NOT_A_DATASET}"])


def main(argv: list[str] | None = None) -> int:
    """`python -m training.data.check PATH PURPOSE ...`: check one upload in a process of its
    own, its memory capped and its priority lowered, and print the answer as one JSON line:
    a hostile file can cost this process, never the service's."""
    import argparse
    import json
    import os
    import resource

    p = argparse.ArgumentParser(prog="python -m training.data.check")
    p.add_argument("path", type=Path)
    p.add_argument("purpose")
    p.add_argument("--max-decompressed-bytes", type=int)
    p.add_argument("--max-line-chars", type=int)
    p.add_argument("--memory-bytes", type=int, help="address space this process may use")
    args = p.parse_args(argv)
    if args.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    os.nice(10)  # inference first: a check may wait
    limits = Limits(args.max_decompressed_bytes, args.max_line_chars)
    try:
        fmt, rows, labels = check_upload(args.path, args.purpose, limits)
        answer: dict = {"ok": True, "format": fmt, "rows": rows, "labels": labels}
    except DataError as exc:
        answer = {"ok": False, "message": str(exc)}
    except MemoryError:
        answer = {
            "ok": False,
            "message": f"{args.path.name}: too large to check (the memory limit)",
        }
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
