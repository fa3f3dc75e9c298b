import gzip
import json

import pytest

from training.data import DataError, read_classification, read_corpus, read_squad, sniff_format


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_classification_reads_rows_and_labels(tmp_path):
    f = _write(
        tmp_path / "d.jsonl", '{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": 0}\n'
    )
    d = read_classification(f)
    assert d.texts == ["good", "bad"] and d.labels == ["pos", "0"]
    assert d.label_names == ["0", "pos"] and d.counts == {"0": 1, "pos": 1}


def test_classification_errors_name_every_bad_line(tmp_path):
    f = _write(
        tmp_path / "d.jsonl",
        "\n".join(
            [
                '{"text": "ok", "label": "a"}',
                '{"text": "", "label": "a"}',
                '{"text": "x"}',
                "not json",
                '["a list"]',
                '{"text": "y", "label": true}',
                '{"text": "z", "label": "b"}',
            ]
        ),
    )
    with pytest.raises(DataError) as exc:
        read_classification(f)
    msg = str(exc.value)
    assert "5 problems" in msg
    for n, says in [
        (2, '"text" is missing or empty'),
        (3, '"label" is missing'),
        (4, "is not valid JSON"),
        (5, "must be an object"),
        (6, '"label" is missing'),
    ]:
        assert f"d.jsonl line {n}: {says}" in msg, msg


def test_classification_needs_two_labels_and_utf8(tmp_path):
    with pytest.raises(DataError, match="only the label"):
        read_classification(_write(tmp_path / "one.jsonl", '{"text": "a", "label": "x"}\n'))
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"text": "caf\xe9", "label": "a"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_classification(bad)
    with pytest.raises(DataError, match="has no rows"):
        read_classification(_write(tmp_path / "empty.jsonl", "\n"))


def _squad(qas, context="Paris is in France."):
    return json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]})


def test_squad_reads_and_checks_answer_offsets(tmp_path):
    ok = [{"id": "q1", "question": "Where?", "answers": [{"text": "France", "answer_start": 12}]}]
    (ex,) = read_squad(_write(tmp_path / "s.json", _squad(ok)))
    assert ex.id == "q1" and ex.answers == [("France", 12)]
    bad = [
        {"id": "q1", "question": "Where?", "answers": [{"text": "France", "answer_start": 3}]},
        {"id": "q1", "question": "Again?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "q3", "question": "", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "q4", "question": "Who?", "answers": [{"text": "Berlin", "answer_start": 0}]},
    ]
    with pytest.raises(DataError) as exc:
        read_squad(_write(tmp_path / "b.json", _squad(bad)))
    msg = str(exc.value)
    assert "question 'q1': answer 0 'France' is not at answer_start 3; it occurs at 12" in msg
    assert "question 'q1': the id is used twice" in msg
    assert "question 'q3': \"question\" is missing" in msg
    assert "'Berlin' is not at answer_start 0; it is not in the context" in msg


def test_squad_layout_errors(tmp_path):
    with pytest.raises(DataError, match="SQuAD v1.1 JSON"):
        read_squad(_write(tmp_path / "x.json", '{"version": 1}'))
    with pytest.raises(DataError, match=r"y.json: is not valid JSON \(parse error: premature EOF"):
        read_squad(_write(tmp_path / "y.json", '{"data": ['))


def test_corpus_plain_gzip_and_chunking(tmp_path):
    long = " ".join(["word"] * 1000)
    plain = _write(tmp_path / "c.txt", f"first doc\n\n{long}\n")
    gz = tmp_path / "c.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(f"first doc\n\n{long}\n")
    for path in (plain, gz):
        docs = read_corpus(path, chunk_chars=500)
        assert docs[0] == "first doc"
        assert len(docs) > 5 and all(len(d) <= 500 for d in docs[1:])
        assert sum(d.count("word") for d in docs) == 1000
    with pytest.raises(DataError, match="has no text"):
        read_corpus(_write(tmp_path / "e.txt", "\n \n"))


def test_sniff_format(tmp_path):
    assert sniff_format(_write(tmp_path / "a", _squad([]))) == "squad"
    assert sniff_format(_write(tmp_path / "b", '{"text": "x", "label": "y"}\n')) == "classification"
    assert sniff_format(_write(tmp_path / "c", "plain text\n")) == "corpus"
