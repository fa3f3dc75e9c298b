"""Readers and validators for training data: a text corpus, classification JSON Lines, SQuAD.

Every reader checks the whole file before returning anything: a file with any bad row raises
`DataError` listing the first problems, each naming the file, the line (or question id) and
what to change. Nothing trains on half-valid data. Every reader streams, within `Limits`
(decompressed size, line length), so a file costs at most what its limits allow. Light: the
service checks uploads with the same code (check.py).
"""

from __future__ import annotations

from collections.abc import Callable

from training.data.check import check_upload
from training.data.classification import ClassificationData, read_classification
from training.data.corpus import CORPUS_CHUNK_CHARS, read_corpus
from training.data.squad import QAExample, read_squad
from training.data.text import DataError, Limits, file_sha256, sniff_format

# the reader of each file format (training.config.TASKS names the format of each task)
READERS: dict[str, Callable] = {
    "classification": read_classification,
    "squad": read_squad,
    "corpus": read_corpus,
}

__all__ = [
    "CORPUS_CHUNK_CHARS",
    "READERS",
    "ClassificationData",
    "DataError",
    "Limits",
    "QAExample",
    "check_upload",
    "file_sha256",
    "read_classification",
    "read_corpus",
    "read_squad",
    "sniff_format",
]
