"""QA postprocessing and the SQuAD metric against hand-computed cases; QA windows."""

import numpy as np
import pytest

from training.data import QAExample
from training.spans import best_spans
from training.tasks.classification import macro_f1
from training.tasks.squad import best_answers, exact_match, squad_scores, token_f1


def test_squad_normalization_and_f1():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("in Paris", "Paris") == 0.0
    # pred "in paris france" vs gold "paris": precision 1/3, recall 1 -> F1 0.5
    assert token_f1("in Paris, France", "Paris") == pytest.approx(0.5)
    assert token_f1("", "Paris") == 0.0
    examples = [
        QAExample("a", "q", "c", [("Paris", 0), ("the city of Paris", 0)]),
        QAExample("b", "q", "c", [("1889", 0)]),
    ]
    scores = squad_scores({"a": "city of Paris", "b": "in 1890"}, examples)
    # a: EM with "the city of paris" (articles dropped) = 1, F1 = 1; b: EM 0, F1 0
    assert scores == {"exact_match": 50.0, "f1": 50.0}


def test_best_spans_respects_order_length_and_context():
    offsets = [None, None, (0, 5), (6, 9), (10, 15), None]  # [CLS] q [ctx ctx ctx] [SEP]
    start = np.array([9.0, 0, 1, 5, 2, 0])
    end = np.array([9.0, 0, 0, 1, 6, 8])
    spans = best_spans(start, end, offsets, n_best=6, max_answer_length=30)
    assert spans[0] == (11.0, 6, 15)  # start token 3, end token 4; CLS and SEP never chosen
    assert all(s <= e for _, s, e in spans)
    # one-token answers only: token 4 alone scores 2 + 6 = 8, token 3 alone 5 + 1 = 6
    assert best_spans(start, end, offsets, max_answer_length=1)[0] == (8.0, 10, 15)


def test_postprocess_takes_the_best_window():
    context = "aaaa bbbb cccc"
    ex = [QAExample("q", "?", context, [("cccc", 10)])]
    windows = [
        {"example_index": 0, "offsets": [None, (0, 4), (5, 9)]},
        {"example_index": 0, "offsets": [None, (5, 9), (10, 14)]},
    ]
    start = np.array([[0, 1.0, 0], [0, 0, 5.0]])
    end = np.array([[0, 1.0, 0], [0, 0, 5.0]])
    assert best_answers(ex, windows, start, end) == {"q": "cccc"}


def test_macro_f1():
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2) == pytest.approx(
        (2 / 3 + 0.8) / 2
    )


def test_a_training_question_too_long_for_the_window_is_capped_not_a_tokenizer_error(store):
    """The tokenizer refuses a question that leaves the context no room in a window; the task
    cuts it to what the window holds (spans.question_cap) instead."""
    from training.config import FinetuneSpec
    from training.tasks import load_tokenizer
    from training.tasks.qa import QATask

    spec = FinetuneSpec(
        run_id="q",
        task="extractive-qa",
        train_file="unused.json",
        hyperparameters={"max_seq_length": 32, "doc_stride": 8, "max_question_tokens": 500},
    )
    tok = load_tokenizer(store / "models" / "base" / "tokenizer", 32)
    context = "the eiffel tower stands in paris france ."
    long = QAExample("long", "where is the eiffel tower " * 60, context, [("paris", 27)])
    windows = QATask(spec, tok).windows([long])
    assert windows and all(len(w["input_ids"]) <= 32 for w in windows)
    assert any(w["start_positions"] > 0 for w in windows)  # the answer is still in a window
