"""A WordPiece tokenizer trained on the corpus, for masked-lm pretraining from scratch."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers.implementations import BertWordPieceTokenizer


def train_wordpiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int) -> Path:
    """Train a lower-casing BERT WordPiece vocabulary; writes tokenizer.json and vocab.txt."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )
    tok.save(str(out / "tokenizer.json"))
    tok.save_model(str(out))
    return out
