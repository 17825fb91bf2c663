"""Train a generated module on real data: generate, certify on a data batch, fit, evaluate.

Pure orchestration: progress is reported through a callback and the result is a value; the
CLI prints it and writes the files.  Training refuses to start when the certificate fails.
"""

from __future__ import annotations

import inspect
import math
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from symbackprop.checkpoint import load_module
from symbackprop.codegen import generate
from symbackprop.data import (
    Dataset,
    check_features,
    load_dataset,
    standardizer,
    unscaled_feature,
)
from symbackprop.derive import Derivation, derive
from symbackprop.errors import InputError
from symbackprop.graph import SymbolicNetwork, build
from symbackprop.spec import OPTIMIZERS, NetworkSpec, TrainSpec
from symbackprop.verify import Certificate, certify, pass_cost

CHECK_BATCH = 4

# The certificate before training costs no more than the training itself, by operation counts
# (never a clock), in the certificate's unit: sample-parameter products of a float64 pass.
STEP_PASSES = 3  # a training step: forward, backward and update, one pass each
# One operation of the exact witness (40-digit arithmetic) costs the CPU of this many products
# of the module's float64 passes (measured: 0.4-0.5 ns per product in fit, 6-30 us per exact
# operation with the neuron-level graph; 130 us on digits_mlp before its evaluation was
# compiled)
EXACT_OP_PRODUCTS = 50_000
# exact operations always allowed: a small network's exact witness costs less than its
# derivation (seed_mlp: 929 per sample)
EXACT_FLOOR = 4_000
# Training is refused before anything is derived or generated when its work, by the same
# count, is past these: MAX_TRAINING_WORK products in all (a few hours of one core), and
# MAX_PASS_ELEMENTS numbers in the largest array one pass builds (a convolution's im2col
# matrix: rows x output positions x C*kh*kw; 1 GiB of float64).
MAX_TRAINING_WORK = 10**13
MAX_PASS_ELEMENTS = 1 << 27


class CheckFailed(Exception):
    """The certificate did not pass, so training was refused."""

    def __init__(self, certificate: Certificate, hint: str = "") -> None:
        self.certificate = certificate
        super().__init__(
            f"the certificate for {certificate.name} failed, so not training: "
            f"{certificate.why_failed()}{hint}"
        )


@dataclass(frozen=True)
class Progress:
    epoch: int
    epochs: int
    loss: float
    test_metric: float  # accuracy (classification) or RMSE (regression) on the test part
    seconds: float
    classification: bool
    val_loss: float | None = None  # on the validation part, when there is one
    val_metric: float | None = None


@dataclass(frozen=True)
class Epoch:
    """One epoch's numbers for the metrics file and the training curve.  ``loss`` is fit's
    mean mini-batch loss (training mode); the others are measured after the epoch, in
    inference mode, on each part there is (None for a part that is missing or unmeasured)."""

    epoch: int
    lr: float
    loss: float
    train_loss: float | None = None
    train_metric: float | None = None
    val_loss: float | None = None
    val_metric: float | None = None
    test_loss: float | None = None
    test_metric: float | None = None


@dataclass(frozen=True)
class TrainResult:
    derivation: Derivation
    source: str  # the generated module's text
    module: types.ModuleType
    dataset: Dataset  # as read: features not standardized
    certificate: Certificate | None  # None with check=False
    options: TrainSpec
    params: dict[str, np.ndarray]  # the network's, on standardized features if scaling
    history: tuple[float, ...]
    train_loss: float
    test_loss: float
    train_metric: float  # accuracy (classification) or RMSE (regression)
    test_metric: float
    seconds: float
    stop_reason: str = ""  # why the generated fit stopped a diverging run ("" if it did not)
    scaling: tuple[np.ndarray, np.ndarray] | None = None  # (x_mean, x_scale) of --standardize
    epochs: tuple[Epoch, ...] = ()
    val_loss: float = math.nan
    val_metric: float = math.nan
    best_epoch: int = 0  # with patience: the epoch whose weights were kept
    stopped_early: bool = False
    hint: str = ""  # "; try --standardize ..." when the features look unscaled

    @property
    def classification(self) -> bool:
        return self.dataset.classes is not None

    @property
    def diverged(self) -> bool:
        """fit stopped a diverging run, or the final loss is not finite: lr was too large."""
        held = len(self.dataset.y_test) > 0  # no test part: its loss is NaN, not diverged
        return bool(self.stop_reason) or not (
            math.isfinite(self.train_loss) and (math.isfinite(self.test_loss) or not held)
        )

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """What is saved: the params, with the input scaling (x_mean, x_scale, applied by
        every function of the generated module) and the class names when there are any."""
        weights = dict(self.params)
        if self.scaling is not None:
            weights["x_mean"], weights["x_scale"] = self.scaling
        if self.dataset.class_names is not None:
            weights["classes"] = np.array(self.dataset.class_names)
        return weights

    def final_line(self) -> str:
        """The machine-readable last line of ``train`` and ``demo``."""
        metric = "accuracy" if self.classification else "rmse"
        return (
            f"final: train_loss={self.train_loss:.6g} test_loss={self.test_loss:.6g} "
            f"train_{metric}={self.train_metric:.6g} test_{metric}={self.test_metric:.6g}"
        )


def options(spec: NetworkSpec, **overrides: object) -> TrainSpec:
    """The spec's ``[train]`` defaults with command-line overrides (None = keep), checked."""
    chosen = {k: v for k, v in overrides.items() if v is not None}

    def integer(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    for key, least in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("step_size", 1)):
        if key in chosen and not (integer(chosen[key]) and chosen[key] >= least):
            kind = "a positive" if least else "a non-negative"
            flag = "--" + key.replace("_", "-")
            raise InputError(flag, f"expected {kind} integer, got {chosen[key]!r}")
    for key, least in (("lr", 0.0), ("gamma", 0.0), ("min_lr", None)):
        if key not in chosen:
            continue
        value = chosen[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or (value <= least if least is not None else value < 0)
        ):
            kind = "a positive" if least is not None else "a non-negative"
            flag = "--" + key.replace("_", "-")
            raise InputError(flag, f"expected {kind} number, got {value!r}")
        chosen[key] = float(value)
    if "optimizer" in chosen and chosen["optimizer"] not in OPTIMIZERS:
        raise InputError(
            "--optimizer", f"expected one of {', '.join(OPTIMIZERS)}, got {chosen['optimizer']!r}"
        )
    return replace(spec.train, **chosen)


def _chunks(count: int, rows: int) -> list[slice]:
    return [slice(first, first + rows) for first in range(0, count, rows)] or [slice(0, 0)]


def _metric(
    module: types.ModuleType,
    params: dict,
    X: np.ndarray,
    y: np.ndarray,
    classification: bool,
    rows: int,
) -> float:
    """Accuracy or RMSE, ``rows`` samples at a time (one call for the flat examples)."""
    if classification:
        right = sum(
            int(np.sum(module.predict(params, X[part]) == y[part]))
            for part in _chunks(len(X), rows)
        )
        return right / len(X) if len(X) else float("nan")
    squares = 0.0
    for part in _chunks(len(X), rows):
        outputs = module.forward(params, X[part])
        squares += float(np.sum((outputs - y[part].reshape(outputs.shape)) ** 2))
    return math.sqrt(squares / y.size) if y.size else float("nan")


def _loss(module: types.ModuleType, params: dict, X: np.ndarray, y: np.ndarray, rows: int) -> float:
    """The loss in inference mode (the module's loss trains otherwise: dropout, batch stats),
    ``rows`` samples at a time: the mean of the parts' losses weighted by their sizes (the
    l2 term, the same in each, counts once)."""
    keyword = {"train": False} if "train" in inspect.signature(module.loss).parameters else {}
    parts = _chunks(len(X), rows)
    if len(parts) == 1:
        return module.loss(params, X, y, **keyword)
    total = sum(len(X[part]) * module.loss(params, X[part], y[part], **keyword) for part in parts)
    return total / len(X)


def pass_elements(spec: NetworkSpec) -> int:
    """Numbers in the largest array a pass builds per sample: a convolution's im2col matrix
    (output positions x C*kh*kw), else the widest layer."""
    largest = max(spec.sizes)
    for layer in spec.flat:
        if layer.kind == "conv2d":
            _, rows, columns = layer.shape
            kh, kw = layer.layer.kernel
            largest = max(largest, rows * columns * layer.in_shape[0] * kh * kw)
    return largest


def training_work(net: SymbolicNetwork, samples: int, opts: TrainSpec) -> int:
    """The multiply-adds of fit's float64 passes over ``samples`` training rows, in the
    certificate's unit (``verify.pass_cost``: a convolution's C*kh*kw per output element)."""
    batch = max(1, min(opts.batch_size, samples))
    steps = opts.epochs * math.ceil(samples / batch)
    return steps * STEP_PASSES * pass_cost(net, batch)


def check_work(net: SymbolicNetwork, samples: int, opts: TrainSpec) -> None:
    """Refuse a training too large to run, by operation counts, before any work is done."""
    spec = net.spec
    batch = max(1, min(opts.batch_size, samples))
    elements = batch * pass_elements(spec)
    if elements > MAX_PASS_ELEMENTS:
        raise InputError(
            "--batch-size",
            f"a mini-batch of {batch} of {spec.name} ({spec.shape_text()}) needs arrays of "
            f"{elements:,} numbers, over the limit of {MAX_PASS_ELEMENTS:,}; use a smaller "
            "batch or a smaller network",
        )
    work = training_work(net, samples, opts)
    if work > MAX_TRAINING_WORK:
        raise InputError(
            "SPEC",
            f"training {spec.name} ({spec.shape_text()}, {net.operations:,} "
            f"multiply-adds per sample) for {opts.epochs:,} epochs of {samples:,} samples "
            f"needs {work:.3g} multiply-adds, over the limit of {MAX_TRAINING_WORK:.0e}; "
            "use fewer epochs, less data or a smaller network",
        )


def eval_rows(spec: NetworkSpec) -> int:
    """Samples evaluated at once after training, so that no array passes MAX_PASS_ELEMENTS."""
    return max(1, MAX_PASS_ELEMENTS // pass_elements(spec))


def exact_budget(net: SymbolicNetwork, samples: int, opts: TrainSpec) -> int:
    """Exact operations the certificate before training may spend: what half of the
    training's own work pays for (finite differences take the other half), at least
    EXACT_FLOOR.  digits_mlp on the bundled digits: 12,500, and one sample needs 22,870, so
    its finite differences check it; ``symbackprop check`` runs the exact witness too."""
    return max(EXACT_FLOOR, training_work(net, samples, opts) // 2 // EXACT_OP_PRODUCTS)


def train(
    spec: NetworkSpec,
    data: str,
    train_options: TrainSpec | None = None,
    *,
    test_fraction: float = 0.2,
    split_seed: int | None = None,
    val_fraction: float = 0.0,
    patience: int | None = None,
    standardize: bool = False,
    check: bool = True,
    record: bool = False,
    threads: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    checked: Callable[[Certificate], None] | None = None,
    use_torch: bool = False,
    checking: Callable[[float, str], None] | None = None,
) -> TrainResult:
    """Generate, certify on a batch of the data, train, evaluate; raises CheckFailed.

    ``split_seed`` chooses the split (default: the options' seed, which also initializes
    and shuffles); ``val_fraction`` draws a validation part, on which ``patience`` stops
    training after that many epochs without a better validation loss and keeps the best
    epoch's weights; ``standardize`` scales every feature by the training part's mean and
    spread (saved with the weights); ``check=False`` skips the certificate; ``record``
    measures every part after every epoch (``TrainResult.epochs``; the metrics file and the
    training curve); ``threads`` limits the BLAS threads while training; ``checking`` is
    the certificate's progress (``verify.certify``'s ``progress``).

    The certificate's witnesses: finite differences, the exact witness within
    ``exact_budget``, and PyTorch only with ``use_torch`` (its import alone outweighs the
    training of the bundled examples).
    """
    net = build(spec)
    opts = train_options or spec.train
    if patience is not None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise InputError("--patience", f"expected a positive integer, got {patience!r}")
        if not val_fraction:
            raise InputError(
                "--patience", "early stopping watches a validation part: give --val-fraction too"
            )
    dataset = load_dataset(
        data,
        outputs=net.sizes[-1],
        classification=net.loss.classification,
        test_fraction=test_fraction,
        seed=opts.seed if split_seed is None else split_seed,
        shape=spec.input_shape,
        val_fraction=val_fraction,
    )
    check_features(dataset, net.sizes[0])
    check_work(net, len(dataset.X_train), opts)
    derivation = derive(net)
    if any(layer.kind == "batch_norm" for layer in spec.flat):
        count = len(dataset.X_train)
        if opts.batch_size == 1 or count % opts.batch_size == 1:
            raise InputError(
                "--batch-size",
                f"batch size {opts.batch_size} leaves a mini-batch of 1 of the {count} training "
                "samples; batch norm needs at least 2 per mini-batch in training",
            )
    scaling = None
    if standardize:
        mean, scale = standardizer(dataset.X_train.reshape(len(dataset.X_train), -1))
        scaling = (mean.reshape(dataset.shape), scale.reshape(dataset.shape))
    parts = _Parts(dataset, scaling)
    hint = "" if standardize else _hint(dataset.X_train)
    source = generate(derivation)
    module = load_module(source, spec.name)
    certificate = None
    if check:
        sample = (parts.X_train[:CHECK_BATCH], dataset.y_train[:CHECK_BATCH])
        certificate = certify(
            derivation,
            batch=len(sample[0]),
            seed=opts.seed,
            module_source=source,
            data=sample,
            use_torch=use_torch,
            exact_budget=exact_budget(net, len(dataset.X_train), opts),
            progress=checking,
        )
        if checked is not None:
            checked(certificate)
        if not certificate.passed:
            raise CheckFailed(certificate, hint)

    classification = dataset.classes is not None
    rows = eval_rows(spec)
    params = module.init_params(seed=opts.seed)
    start = time.perf_counter()
    losses: list[float] = []
    epochs: list[Epoch] = []
    best = {"loss": math.inf, "epoch": 0, "params": None}

    def measure(X: np.ndarray | None, y: np.ndarray | None) -> tuple[float | None, float | None]:
        if X is None or not len(X):
            return None, None
        return (
            _loss(module, params, X, y, rows),
            _metric(module, params, X, y, classification, rows),
        )

    def report(epoch: int, loss: float) -> bool:
        losses.append(loss)
        val_loss, val_metric = measure(parts.X_val, dataset.y_val)
        test_metric = math.nan
        if record:
            train_loss, train_metric = measure(parts.X_train, dataset.y_train)
            test_loss, test_metric = measure(parts.X_test, dataset.y_test)
            epochs.append(
                Epoch(
                    epoch,
                    rates[epoch - 1],
                    loss,
                    train_loss,
                    train_metric,
                    val_loss,
                    val_metric,
                    test_loss,
                    test_metric,
                )  # fmt: skip
            )
        elif progress is not None and len(parts.X_test):
            test_metric = _metric(
                module, params, parts.X_test, dataset.y_test, classification, rows
            )
        if progress is not None:
            progress(
                Progress(
                    epoch,
                    opts.epochs,
                    loss,
                    math.nan if test_metric is None else test_metric,
                    time.perf_counter() - start,
                    classification,
                    val_loss,
                    val_metric,
                )
            )
        if patience is None or val_loss is None:
            return False
        if val_loss < best["loss"]:
            best.update(loss=val_loss, epoch=epoch, params=_copy(params))
            return False
        return epoch - best["epoch"] >= patience  # True stops fit after this epoch

    stop_reason = ""
    schedule = {key: getattr(opts, key) for key in ("schedule", "step_size", "gamma", "min_lr")}
    rates = module.learning_rates(opts.lr, opts.epochs, **schedule)  # fit's own, per epoch
    extra = {"threads": threads} if threads is not None else {}
    with np.errstate(all="ignore"):  # a diverging run is reported once, not per operation
        try:
            module.fit(
                params,
                parts.X_train,
                dataset.y_train,
                epochs=opts.epochs,
                batch_size=opts.batch_size,
                lr=opts.lr,
                optimizer=opts.optimizer,
                seed=opts.seed,
                callback=report,
                **schedule,
                **extra,
            )
        except FloatingPointError as stopped:  # the module's fit saw the loss diverge
            stop_reason = str(stopped)
    seconds = time.perf_counter() - start
    stopped_early = patience is not None and len(losses) < opts.epochs and not stop_reason
    if best["params"] is not None and not stop_reason:  # keep the best epoch's weights
        for key, value in best["params"].items():
            params[key][...] = value
    measured = {}
    if stop_reason:  # nothing is measured on the parameters of a diverged run
        train_loss = test_loss = train_metric = test_metric = math.nan
    else:
        with np.errstate(all="ignore"):
            # in inference mode: running statistics, no dropout
            train_loss, train_metric = measure(parts.X_train, dataset.y_train)
            test_loss, test_metric = measure(parts.X_test, dataset.y_test)
            val_loss, val_metric = measure(parts.X_val, dataset.y_val)
            if val_loss is not None:
                measured = {"val_loss": val_loss, "val_metric": val_metric}
    nan = math.nan
    return TrainResult(
        derivation=derivation,
        source=source,
        module=module,
        dataset=dataset,
        certificate=certificate,
        options=opts,
        params=params,
        history=tuple(losses),
        train_loss=train_loss,
        test_loss=nan if test_loss is None else test_loss,
        train_metric=train_metric,
        test_metric=nan if test_metric is None else test_metric,
        seconds=seconds,
        stop_reason=stop_reason,
        scaling=scaling,
        epochs=tuple(epochs),
        best_epoch=best["epoch"],
        stopped_early=stopped_early,
        hint=hint,
        **measured,
    )


class _Parts:
    """The features of each part as the network sees them: standardized with ``scaling``
    ((X - x_mean) / x_scale, the generated module's own order of operations), else as read."""

    def __init__(self, dataset: Dataset, scaling: tuple[np.ndarray, np.ndarray] | None) -> None:
        def scaled(X: np.ndarray | None) -> np.ndarray | None:
            if X is None or scaling is None:
                return X
            return (X - scaling[0]) / scaling[1]

        self.X_train = scaled(dataset.X_train)
        self.X_val = scaled(dataset.X_val)
        self.X_test = scaled(dataset.X_test)


def _copy(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: value.copy() for key, value in params.items()}


def _hint(X: np.ndarray) -> str:
    """The suggestion to standardize, when some feature is far from it."""
    unscaled = unscaled_feature(X)
    return (
        f"; the features are not standardized ({unscaled}): try --standardize" if unscaled else ""
    )
