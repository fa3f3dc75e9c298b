"""Text to pretrain on: plain or gzip UTF-8, one document or paragraph a line."""

from __future__ import annotations

from pathlib import Path

from training.data.text import NO_LIMITS, Limits, Problems, lines

# a corpus line longer than this is cut into chunks at word boundaries
CORPUS_CHUNK_CHARS = 2000


def chunks(line: str, size: int) -> list[str]:
    """A long line cut at word boundaries into pieces of about `size` characters."""
    if len(line) <= size:
        return [line]
    out: list[str] = []
    current: list[str] = []
    length = 0
    for word in line.split():
        if length + len(word) + 1 > size and current:
            out.append(" ".join(current))
            current, length = [], 0
        current.append(word)
        length += len(word) + 1
    if current:
        out.append(" ".join(current))
    return out


def read_corpus(
    path: str | Path, *, chunk_chars: int = CORPUS_CHUNK_CHARS, limits: Limits = NO_LIMITS
) -> list[str]:
    """The documents of the file (blank lines skipped, long ones cut into chunks)."""
    path = Path(path)
    problems = Problems(path)
    docs: list[str] = []
    for _, line in lines(path, limits, problems):
        if line := line.strip():
            docs.extend(chunks(line, chunk_chars))
    if not docs:
        problems.add("", "has no text")
    problems.raise_if_any()
    return docs


def check_corpus(path: Path, limits: Limits) -> int:
    """The documents a corpus holds, read once and kept nowhere: an upload's check."""
    problems = Problems(path)
    count = sum(
        len(chunks(text, CORPUS_CHUNK_CHARS))
        for _, line in lines(path, limits, problems)
        if (text := line.strip())
    )
    if not count:
        problems.add("", "has no text")
    problems.raise_if_any()
    return count
