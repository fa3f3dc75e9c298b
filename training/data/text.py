"""Reading a data file, bounded: plain or gzip (by its magic bytes), UTF-8, its decompressed
size and every line's length held to limits while it streams, so that no file, however made,
costs more than those limits to read. Problems are collected, each naming file and place."""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_REPORTED = 20
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Limits:
    """What reading one file may cost; None: no limit (training reads files already checked)."""

    max_decompressed_bytes: int | None = None
    max_line_chars: int | None = None


NO_LIMITS = Limits()


class DataError(ValueError):
    """A data file that cannot be trained on; `problems` holds one line per problem."""

    def __init__(self, path: str | Path, problems: list[str], total: int | None = None):
        self.path = str(path)
        self.problems = problems
        total = total if total is not None else len(problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"{Path(path).name}: {total} {noun}:\n  " + "\n  ".join(problems) + more)


class Problems:
    """The problems found in a file: the first MAX_REPORTED kept, all counted."""

    def __init__(self, path: Path):
        self.path, self.total = path, 0
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_REPORTED:
            self.items.append(f"{self.path.name}{' ' + where if where else ''}: {message}")

    def stop(self, where: str, message: str) -> DataError:
        """A problem after which the file cannot be read on: raise what this returns."""
        self.add(where, message)
        return DataError(self.path, self.items, self.total)

    def raise_if_any(self) -> None:
        if self.total:
            raise DataError(self.path, self.items, self.total)


class _Bounded(io.RawIOBase):
    """A binary stream that refuses to yield more than `limit` bytes."""

    def __init__(self, inner: BinaryIO, limit: int | None, problems: Problems):
        self.inner, self.limit, self.problems, self.count = inner, limit, problems, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            raise self.problems.stop(
                "", f"is larger than {self.limit} bytes once decompressed (the limit)"
            )
        buffer[: len(data)] = data
        return len(data)


def open_binary(path: Path, limits: Limits, problems: Problems) -> io.BufferedReader:
    """The file's bytes, decompressed when it is gzip, bounded by the limit."""
    raw = path.open("rb")
    magic = raw.read(2)
    raw.seek(0)
    inner: BinaryIO = gzip.GzipFile(fileobj=raw) if magic == GZIP_MAGIC else raw  # type: ignore[assignment]  # a GzipFile reads bytes
    return io.BufferedReader(_Bounded(inner, limits.max_decompressed_bytes, problems))


def lines(path: Path, limits: Limits, problems: Problems) -> Iterator[tuple[int, str]]:
    """(number, line) of a text file, each line at most `max_line_chars`; a file that cannot
    be read (not UTF-8, a broken gzip, a line too long) is a problem that ends the reading."""
    most = limits.max_line_chars
    try:
        with io.TextIOWrapper(
            open_binary(path, limits, problems), encoding="utf-8", newline=""
        ) as f:
            n = 0
            while line := f.readline(most + 1 if most else -1):
                n += 1
                if most and len(line) > most:
                    raise problems.stop(
                        f"line {n}", f"is longer than {most} characters (the limit)"
                    )
                yield n, line
    except UnicodeDecodeError as exc:
        raise problems.stop(
            "", f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise problems.stop("", f"cannot be read: {exc}") from None


def sniff_format(path: str | Path, limits: Limits = Limits()) -> str:
    """`squad`, `classification` or `corpus`, from the first non-blank line (of the first
    64 KiB of text)."""
    path = Path(path)
    problems = Problems(path)
    try:
        with io.TextIOWrapper(
            open_binary(path, limits, problems), encoding="utf-8", newline=""
        ) as f:
            head = f.read(1 << 16)
    except (UnicodeDecodeError, OSError, EOFError, zlib.error, DataError):
        return "corpus"  # the reader of its purpose says what is wrong with it
    first = next((ln.lstrip() for ln in head.splitlines() if ln.strip()), "")
    if (first.startswith("{") and '"data"' in first[:200]) or first.strip() == "{":
        return "squad"
    return "classification" if first.startswith("{") else "corpus"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks: the one hash of a dataset everywhere."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
