"""Readers and validators for training data: a text corpus, classification JSON Lines, SQuAD.

Each reader checks the whole file before returning anything: a file with any bad row raises
`DataError` listing the first problems, each naming the file, the line (or question id) and
what to change. Nothing trains on half-valid data. Light: the service validates uploads with
the same functions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAX_REPORTED = 20
# a corpus line longer than this is cut into chunks at word boundaries
CORPUS_CHUNK_CHARS = 2000


class DataError(ValueError):
    """A data file that cannot be trained on; `problems` holds one line per problem."""

    def __init__(self, path: str | Path, problems: list[str], total: int | None = None):
        self.path = str(path)
        self.problems = problems
        total = total if total is not None else len(problems)
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"{Path(path).name}: {total} {noun}:\n  " + "\n  ".join(problems) + more)


class _Problems:
    def __init__(self, path: Path):
        self.path, self.total = path, 0
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.total += 1
        if len(self.items) < MAX_REPORTED:
            self.items.append(f"{self.path.name} {where}: {message}")

    def raise_if_any(self) -> None:
        if self.total:
            raise DataError(self.path, self.items, self.total)


def _open_text(path: Path):
    """Open plain or gzip text by its magic bytes, as UTF-8 (errors are raised, not hidden)."""
    with path.open("rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _lines(path: Path, problems: _Problems):
    try:
        with _open_text(path) as f:
            yield from enumerate(f, start=1)
    except UnicodeDecodeError as exc:
        problems.add("", f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")
    except (OSError, EOFError) as exc:
        problems.add("", f"cannot be read: {exc}")


# ---------------------------------------------------------------------------- classification


@dataclass
class ClassificationData:
    texts: list[str]
    labels: list[str]

    @property
    def label_names(self) -> list[str]:
        return sorted(set(self.labels))

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels).items()))


def read_classification(path: str | Path, *, min_labels: int = 2) -> ClassificationData:
    """JSON Lines, one `{"text": "...", "label": "..."}` a line (a label may be a number)."""
    path = Path(path)
    problems = _Problems(path)
    texts: list[str] = []
    labels: list[str] = []
    for n, line in _lines(path, problems):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(f"line {n}", f"is not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(row, dict):
            problems.add(f"line {n}", 'must be an object {"text": ..., "label": ...}')
            continue
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str) or not text.strip():
            problems.add(f"line {n}", '"text" is missing or empty; give a non-empty string')
        elif (
            isinstance(label, bool) or not isinstance(label, str | int) or str(label).strip() == ""
        ):
            problems.add(
                f"line {n}", '"label" is missing or not a string; give a string (or an integer)'
            )
        else:
            texts.append(text)
            labels.append(str(label).strip())
    if not problems.total and not texts:
        problems.add("", "has no rows; give one JSON object a line")
    elif not problems.total and len(set(labels)) < min_labels:
        problems.add(
            "",
            f"has only the label(s) {sorted(set(labels))}; classification needs "
            f"at least {min_labels} different labels",
        )
    problems.raise_if_any()
    return ClassificationData(texts, labels)


# ---------------------------------------------------------------------------- SQuAD


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)  # (text, start char)


def read_squad(path: str | Path) -> list[QAExample]:
    """SQuAD v1.1 JSON; every answer must be found at its `answer_start` in its context."""
    path = Path(path)
    problems = _Problems(path)
    try:
        with _open_text(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        problems.add(f"line {exc.lineno}", f"is not valid JSON ({exc.msg})")
        problems.raise_if_any()
    except UnicodeDecodeError as exc:
        problems.add("", f"is not UTF-8 text ({exc.reason}); save it as UTF-8")
        problems.raise_if_any()
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        problems.add("", 'must be SQuAD v1.1 JSON: {"data": [{"paragraphs": [...]}]}')
        problems.raise_if_any()
    examples: list[QAExample] = []
    seen: set[str] = set()
    for a, article in enumerate(doc["data"]):
        paragraphs = article.get("paragraphs", []) if isinstance(article, dict) else []
        for p, para in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not context.strip():
                problems.add(where, '"context" is missing or empty')
                continue
            for q in para.get("qas", []):
                example = _question(q, context, where, seen, problems)
                if example is not None:
                    examples.append(example)
    if not problems.total and not examples:
        problems.add("", "has no questions")
    problems.raise_if_any()
    return examples


def _question(q, context: str, where: str, seen: set[str], problems: _Problems) -> QAExample | None:
    """One question of a paragraph, its problems added; None when it cannot be used."""
    qid = str(q.get("id", "")) if isinstance(q, dict) else ""
    qwhere = f"question {qid!r}" if qid else f"{where}.qas"
    if not qid:
        problems.add(qwhere, 'a question has no "id"')
        return None
    if qid in seen:
        problems.add(qwhere, "the id is used twice; ids must be unique")
        return None
    seen.add(qid)
    question = q.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.add(qwhere, '"question" is missing or empty')
        return None
    answers = []
    for i, ans in enumerate(q.get("answers", [])):
        text, start = ans.get("text"), ans.get("answer_start")
        if not isinstance(text, str) or not text or not isinstance(start, int):
            problems.add(qwhere, f'answer {i} needs "text" and an integer "answer_start"')
        elif context[start : start + len(text)] != text:
            found = context.find(text)
            hint = f"; it occurs at {found}" if found >= 0 else "; it is not in the context"
            problems.add(qwhere, f"answer {i} {text[:40]!r} is not at answer_start {start}{hint}")
        else:
            answers.append((text, start))
    if not q.get("answers"):
        problems.add(qwhere, "has no answers (SQuAD v1.1 questions all have one)")
    return QAExample(qid, question, context, answers)


# ---------------------------------------------------------------------------- corpus


def _chunks(line: str, size: int) -> list[str]:
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


def read_corpus(path: str | Path, *, chunk_chars: int = CORPUS_CHUNK_CHARS) -> list[str]:
    """Plain or gzip UTF-8 text, one document or paragraph a line; blank lines are skipped and
    a long line is cut into chunks of about `chunk_chars` at word boundaries."""
    path = Path(path)
    problems = _Problems(path)
    docs: list[str] = []
    for _, line in _lines(path, problems):
        line = line.strip()
        if line:
            docs.extend(_chunks(line, chunk_chars))
    if not problems.total and not docs:
        problems.add("", "has no text")
    problems.raise_if_any()
    return docs


def sniff_format(path: str | Path) -> str:
    """`squad`, `classification` or `corpus`, from the first non-blank character and line."""
    with _open_text(Path(path)) as f:
        for line in f:
            if line.strip():
                first = line.lstrip()
                if (first.startswith("{") and '"data"' in first[:200]) or first.strip() == "{":
                    return "squad"
                if first.startswith("{"):
                    return "classification"
                return "corpus"
    return "corpus"


# the reader of each file format (training.config.TASKS names the format of each task)
READERS: dict[str, Callable] = {
    "classification": read_classification,
    "squad": read_squad,
    "corpus": read_corpus,
}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks: the one hash of a dataset everywhere."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
