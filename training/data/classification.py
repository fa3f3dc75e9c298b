"""Classification JSON Lines: one `{"text": ..., "label": ...}` object a line."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from training.data.text import NO_LIMITS, Limits, Problems, lines


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


def rows(path: Path, limits: Limits, problems: Problems) -> Iterator[tuple[str, str]]:
    """The (text, label) of every good line; every bad line a problem."""
    for n, line in lines(path, limits, problems):
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
        elif isinstance(label, bool) or not isinstance(label, str | int) or not str(label).strip():
            problems.add(
                f"line {n}", '"label" is missing or not a string; give a string (or an integer)'
            )
        else:
            yield text, str(label).strip()


def _check_labels(labels: set[str], count: int, problems: Problems, min_labels: int) -> None:
    if not problems.total and not count:
        problems.add("", "has no rows; give one JSON object a line")
    elif not problems.total and len(labels) < min_labels:
        problems.add(
            "",
            f"has only the label(s) {sorted(labels)}; classification needs "
            f"at least {min_labels} different labels",
        )
    problems.raise_if_any()


def read_classification(
    path: str | Path, *, min_labels: int = 2, limits: Limits = NO_LIMITS
) -> ClassificationData:
    """Every row of the file, for training; DataError unless every line is good."""
    path = Path(path)
    problems = Problems(path)
    texts: list[str] = []
    labels: list[str] = []
    for text, label in rows(path, limits, problems):
        texts.append(text)
        labels.append(label)
    _check_labels(set(labels), len(texts), problems, min_labels)
    return ClassificationData(texts, labels)


def check_classification(
    path: Path, limits: Limits, *, min_labels: int = 2
) -> tuple[int, list[str]]:
    """(rows, labels) of a file, read once and kept nowhere: an upload's check."""
    problems = Problems(path)
    count, labels = 0, set()
    for _, label in rows(path, limits, problems):
        count += 1
        labels.add(label)
    _check_labels(labels, count, problems, min_labels)
    return count, sorted(labels)
