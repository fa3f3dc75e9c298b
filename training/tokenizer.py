"""A WordPiece tokenizer trained on the corpus, for masked-lm pretraining from scratch."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, processors
from tokenizers.implementations import BertWordPieceTokenizer

SPECIAL: list[str | AddedToken] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(
    texts: Iterable[str], out_dir: str | Path, vocab_size: int, *, min_frequency: int = 2
) -> Path:
    """Train a lower-casing BERT WordPiece vocabulary; writes tokenizer.json and vocab.txt."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(
        iter(texts), vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL
    )
    add_bert_template(tok)
    tok.save(str(out / "tokenizer.json"))
    tok.save_model(str(out))
    return out


def add_bert_template(tok: BertWordPieceTokenizer) -> None:
    """[CLS] A [SEP] and [CLS] A [SEP] B [SEP], as BERT's own tokenizers have: a tokenizer
    trained from nothing has no post-processor, so it would add no special tokens and lose
    the question/context split of every QA window after the first."""
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
