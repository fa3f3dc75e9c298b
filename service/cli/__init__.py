"""`tuneserve`: the command line.

    tuneserve run            start a local Ray on loopback and serve the API (Ctrl-C stops it)
    tuneserve import-base    import the bundled encoder (or an HF folder) as a base model
    tuneserve models         list the models in the store
    tuneserve finetune       fine-tune a model (text-classification, extractive-qa)
    tuneserve pretrain       masked-LM pretraining (continued, or from scratch)
    tuneserve export RUN     export the best checkpoint of a run again
    tuneserve files ...      upload and list datasets on a running service
    tuneserve jobs ...       create, follow and cancel jobs on a running service

Heavy imports (ray, torch) happen inside the commands, so `tuneserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from service.cli import remote, run, store, train


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneserve", description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for group in (run, store, train, remote):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except remote.ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
