"""How a terminal shows training: a progress bar for steps, a line for each evaluation."""

from __future__ import annotations

from training import events


def bar(done: int, total: int, width: int = 28) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def progress_line(p: events.Progress) -> str:
    eta = f" eta {p.eta_s:.0f}s" if p.eta_s is not None else ""
    return (
        f"\r{bar(p.step, p.total_steps)} step {p.step}/{p.total_steps} loss {p.loss:.4f} "
        f"{p.samples_per_s:.1f} samples/s{eta}   "
    )


def evaluation_line(e: events.Evaluation) -> str:
    shown = {k: round(v, 4) for k, v in e.metrics.items()}
    if e.loss is not None:
        shown = {"loss": round(e.loss, 4), **shown}
    return f"\n  eval at step {e.step}: {shown}"
