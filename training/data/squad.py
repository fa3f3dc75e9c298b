"""SQuAD v1.1 JSON, read one article at a time (ijson): every answer must be found at its
`answer_start` in its context."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ijson

from training.data.text import NO_LIMITS, Limits, Problems, open_binary


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[tuple[str, int]] = field(default_factory=list)  # (text, start char)


def examples(path: Path, limits: Limits, problems: Problems) -> Iterator[QAExample]:
    """The questions of the file, article by article; every bad one a problem."""
    seen: set[str] = set()
    try:
        with open_binary(path, limits, problems) as f:
            for a, article in enumerate(ijson.items(f, "data.item")):
                yield from _article(a, article, seen, problems)
    except ijson.JSONError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "it does not parse"
        raise problems.stop("", f"is not valid JSON ({reason})") from None
    except UnicodeDecodeError as exc:
        raise problems.stop("", f"is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise problems.stop("", f"cannot be read: {exc}") from None


def _article(a: int, article, seen: set[str], problems: Problems) -> Iterator[QAExample]:
    paragraphs = article.get("paragraphs", []) if isinstance(article, dict) else []
    for p, para in enumerate(paragraphs if isinstance(paragraphs, list) else []):
        where = f"data[{a}].paragraphs[{p}]"
        context = para.get("context") if isinstance(para, dict) else None
        if not isinstance(context, str) or not context.strip():
            problems.add(where, '"context" is missing or empty')
            continue
        qas = para.get("qas", [])
        for q in qas if isinstance(qas, list) else []:
            example = _question(q, context, where, seen, problems)
            if example is not None:
                yield example


def _question(q, context: str, where: str, seen: set[str], problems: Problems) -> QAExample | None:
    """One question of a paragraph, its problems added; None when it cannot be used."""
    qid = str(q.get("id", "")) if isinstance(q, dict) else ""
    qwhere = f"question {qid[:100]!r}" if qid else f"{where}.qas"
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
    given = q.get("answers", [])
    for i, ans in enumerate(given if isinstance(given, list) else []):
        text = ans.get("text") if isinstance(ans, dict) else None
        start = ans.get("answer_start") if isinstance(ans, dict) else None
        if not isinstance(text, str) or not text or type(start) is not int:
            problems.add(qwhere, f'answer {i} needs "text" and an integer "answer_start"')
        elif context[start : start + len(text)] != text:
            found = context.find(text)
            hint = f"; it occurs at {found}" if found >= 0 else "; it is not in the context"
            problems.add(qwhere, f"answer {i} {text[:40]!r} is not at answer_start {start}{hint}")
        else:
            answers.append((text, start))
    if not given:
        problems.add(qwhere, "has no answers (SQuAD v1.1 questions all have one)")
    return QAExample(qid, question, context, answers)


def read_squad(path: str | Path, *, limits: Limits = NO_LIMITS) -> list[QAExample]:
    """Every question of the file, for training; DataError unless every one is good."""
    path = Path(path)
    problems = Problems(path)
    found = list(examples(path, limits, problems))
    if not found:
        problems.add("", 'has no questions: SQuAD v1.1 JSON is {"data": [{"paragraphs": [...]}]}')
    problems.raise_if_any()
    return found


def check_squad(path: Path, limits: Limits) -> int:
    """The questions a file holds, read once and kept nowhere: an upload's check."""
    problems = Problems(path)
    count = sum(1 for _ in examples(path, limits, problems))
    if not count:
        problems.add("", 'has no questions: SQuAD v1.1 JSON is {"data": [{"paragraphs": [...]}]}')
    problems.raise_if_any()
    return count
