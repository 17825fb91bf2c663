"""What ``symbackprop train --out DIR`` writes besides the module: the metrics, the split
and the training curve, as bytes (the CLI writes them, all or none).

- ``metrics.json``: the run's options, the data's parts and class names, the final numbers
  and one record per epoch (``training.Epoch``); no timings, so that a run gives the same
  bytes on any machine.
- ``split.json``: the sample numbers (0-based, in the data file's order of samples; a csv's
  header and blank lines are not samples) of the training, validation and test parts.
- ``training_curve.png``: loss and accuracy (or RMSE) per epoch, train and validation (or
  test when there is no validation part); needs matplotlib (``pip install symbackprop[plot]``).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict

from symbackprop.training import TrainResult

PNG_DPI = 100


def _number(value: float | None) -> float | None:
    """JSON has no NaN: a missing or undefined number is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def metrics(result: TrainResult, data: str) -> dict[str, object]:
    """The metrics file's content."""
    metric = "accuracy" if result.classification else "rmse"
    dataset = result.dataset
    final = {
        "train_loss": result.train_loss,
        "test_loss": result.test_loss,
        f"train_{metric}": result.train_metric,
        f"test_{metric}": result.test_metric,
    }
    if dataset.X_val is not None:
        final["val_loss"], final[f"val_{metric}"] = result.val_loss, result.val_metric
    epochs = [
        {key: (_number(v) if isinstance(v, float) else v) for key, v in asdict(e).items()}
        for e in result.epochs
    ]
    for record in epochs:  # "metric" in the file is the metric's own name
        for part in ("train", "val", "test"):
            record[f"{part}_{metric}"] = record.pop(f"{part}_metric")
    return {
        "spec": result.derivation.network.spec.name,
        "data": data,
        "options": asdict(result.options),
        "standardized": result.scaling is not None,
        "classes": list(dataset.class_names) if dataset.class_names is not None else None,
        "samples": {part: len(rows) for part, rows in dataset.indices.items()},
        "certificate": None if result.certificate is None else result.certificate.passed,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "best_epoch": result.best_epoch or None,
        "final": {key: _number(value) for key, value in final.items()},
        "epochs": epochs,
    }


def metrics_json(result: TrainResult, data: str) -> str:
    return json.dumps(metrics(result, data), indent=2) + "\n"


def split_json(result: TrainResult) -> str:
    parts = {part: [int(i) for i in rows] for part, rows in result.dataset.indices.items()}
    return json.dumps(parts) + "\n"


def curve_png(result: TrainResult) -> bytes | None:
    """The training curve as PNG bytes, or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "symbackprop"  # no random ids in any backend
    held = "val" if result.dataset.X_val is not None else "test"
    held_name = "validation" if held == "val" else "test"
    metric = "accuracy" if result.classification else "RMSE"
    epochs = [e.epoch for e in result.epochs]
    figure = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    series = {
        "loss": [
            ("train, during the epoch", [e.loss for e in result.epochs], ":", "0.55"),
            ("train", [e.train_loss for e in result.epochs], "--", "C0"),
            (held_name, [getattr(e, f"{held}_loss") for e in result.epochs], "-", "C1"),
        ],
        metric: [
            ("train", [e.train_metric for e in result.epochs], "--", "C0"),
            (held_name, [getattr(e, f"{held}_metric") for e in result.epochs], "-", "C1"),
        ],
    }
    for axes, (name, lines) in zip((loss_axes, metric_axes), series.items(), strict=True):
        for label, values, style, color in lines:
            points = [(x, v) for x, v in zip(epochs, values, strict=True) if v is not None]
            if points:
                x, y = zip(*points, strict=True)
                axes.plot(x, y, style, color=color, label=label, linewidth=1.5)
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if result.best_epoch:  # the weights kept (early stopping)
        for axes in (loss_axes, metric_axes):
            axes.axvline(result.best_epoch, color="C2", linestyle=":", linewidth=1.2)
        metric_axes.plot([], [], ":", color="C2", label=f"kept: epoch {result.best_epoch}")
        metric_axes.legend(fontsize=8)
    loss_axes.set_title(f"{result.derivation.network.spec.name}: loss", fontsize=10)
    metric_axes.set_title(metric, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    # no date or software version in the file: the same run gives the same bytes
    figure.savefig(buffer, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return buffer.getvalue()
