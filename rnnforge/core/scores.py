"""How scores read in a console line or a report table."""

from __future__ import annotations


def headline(scores: dict) -> dict:
    """The scores worth a table column: scalars, not the per-horizon-day detail."""
    return {k: v for k, v in scores.items() if isinstance(v, float) and "_d+" not in k}


def format_value(value: float) -> str:
    """4 decimals for rates and accuracies, thousands separators for counts such as riders."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4f}"


def format_scores(scores: dict) -> str:
    """``accuracy 0.9910, top3_accuracy 1.0000`` (or ``empty split`` for a split with no examples)."""
    if scores.get("examples") == 0:
        return "empty split"
    return ", ".join(f"{k} {format_value(v)}" for k, v in headline(scores).items())
