"""`tuneserve import-base` and `tuneserve models`: the model store on this machine."""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from service.settings import Settings


def import_base(settings: Settings) -> None:
    """Import the bundled encoder as the base model, once (a later call finds it)."""
    from training import artifacts

    if (artifacts.model_dir(settings.home, settings.base_model) / artifacts.MANIFEST).is_file():
        print(f"model store: {settings.home} (base model present)", flush=True)
        return
    print(
        f"importing the bundled encoder into {settings.home} as {settings.base_model!r} "
        "(once; about 20 s) ...",
        flush=True,
    )
    from training.encoders import ensure_base

    # in a child process: the export needs torch and transformers (about 1 GB resident),
    # which the process that then runs the service would otherwise hold for its whole life
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as child:
        manifest, _ = child.submit(ensure_base, settings.home, settings.base_model).result()
    assert manifest.parity is not None
    print(
        f"  exported fp32, int8 and fp16 ONNX; serving {manifest.precision}; int8 cosine to PyTorch "
        f"{manifest.parity.mean_cosine.get('int8', float('nan')):.4f}",
        flush=True,
    )


def cmd_import_base(args: argparse.Namespace) -> int:
    settings = Settings(**({"home": args.home} if args.home else {}))
    from training.encoders import ensure_base

    manifest, imported = ensure_base(settings.home, args.id or settings.base_model, args.source)
    print(
        f"{'imported' if imported else 'already present:'} {manifest.id} in {settings.home} "
        f"(serving {manifest.precision})"
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    settings = Settings(**({"home": args.home} if args.home else {}))
    from service.registry import Registry

    rows = Registry(settings.home, settings.base_model).list()
    if not rows:
        print(f"no models in {settings.home}; `tuneserve import-base` adds the base encoder")
    for m in rows:
        man = m.manifest
        print(f"{m.id:40} {man.task:20} {man.precision:5} {man.created_at:%Y-%m-%d %H:%M}")
    return 0


def add_commands(sub) -> None:
    imp = sub.add_parser("import-base", help="import an encoder into the store as a base model")
    imp.add_argument("--home", type=Path)
    imp.add_argument("--source", type=Path, help="an HF model folder (default: the bundled one)")
    imp.add_argument("--id", help="model id (default: the base model id, `base`)")
    imp.set_defaults(func=cmd_import_base)

    models = sub.add_parser("models", help="list the models in the store")
    models.add_argument("--home", type=Path)
    models.set_defaults(func=cmd_models)
