"""The ``symbackprop`` command: parse, call the library, report, return an exit code.

Exit codes: 0 success, 1 a check failed (or training or descent diverged), 2 bad input (one line on
stderr, no traceback, no files written), 130 interrupted (SIGINT), 141 standard output closed
early (a broken pipe; quiet), 143 terminated (SIGTERM).  Interrupted or terminated, a command
leaves no output file, temporary folder or child process behind.  ``main(argv) -> int`` is
tested in-process.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from symbackprop import __version__
from symbackprop.errors import InputError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143  # 128 + the signal's number

# what derive's -o suffixes say about the document (other suffixes say nothing)
FORMAT_OF_SUFFIX = {".tex": "tex", ".md": "md", ".pdf": "pdf"}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and an InputError (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(self.prog, message)


def output_path(text: str, field: str) -> Path:
    """A file name given on the command line for writing, checked by ``check_outputs``."""
    if not text.strip():
        raise InputError(field, "expected a file name, got an empty string")
    if text.endswith(("/", os.sep)) or Path(text).name in ("", ".", ".."):
        raise InputError(field, f"{text} names a folder, expected a file name")
    path = Path(text)
    check_outputs([path], field)
    return path


_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def check_outputs(
    paths: Iterable[Path], field: str, inputs: Mapping[str, Path | None] | None = None
) -> None:
    """Refuse to write anything but a regular file, and never onto one of the inputs.

    An existing path must be a regular file (or a symbolic link to one: the link is then
    replaced and its target left alone); ``inputs`` maps a flag (``SPEC``, ``--data``) to
    the file it read, and no output may be the same file as one of them.
    """
    for path in paths:
        try:
            mode = os.stat(path).st_mode  # follows symbolic links: a link to a device is refused
        except (FileNotFoundError, NotADirectoryError):
            mode = None  # a new file (or one under a file: writing it says so)
        except OSError as err:
            raise InputError(field, f"cannot use {path}: {err.strerror}") from None
        except ValueError:
            raise InputError(field, f"{str(path)!r} is not a valid file name") from None
        if mode is not None and stat.S_ISDIR(mode):
            raise InputError(field, f"{path} is a directory, expected a file name")
        if mode is not None and not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
            raise InputError(
                field, f"{path} exists and is not a regular file ({kind}); choose a file name"
            )
        for flag, source in (inputs or {}).items():
            if source is not None and _same_file(path, source):
                raise InputError(
                    field,
                    f"{path} is the same file as {flag} ({source}); an output must not "
                    "overwrite an input: choose another name",
                )


def _same_file(a: Path, b: Path) -> bool:
    """The same file: os.path.samefile when both exist (hard and symbolic links), else the
    same resolved path."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, ValueError, RuntimeError):  # unreadable, a NUL byte, a symlink loop
        return False


def write_outputs(
    files: dict[Path, str | bytes],
    field: str = "-o",
    inputs: Mapping[str, Path | None] | None = None,
) -> None:
    """Write every file or none: each goes to a temporary file first, then all are renamed.

    Only regular files are written, never onto an input (``check_outputs``); interrupted or
    failed, no temporary file is left behind.
    """
    check_outputs(files, field, inputs)
    staged: list[tuple[str, Path]] = []
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            # a short prefix: the staging name must fit wherever the output name fits
            prefix = f".{path.name[:32]}."
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
            staged.append((temp, path))
            with os.fdopen(handle, "wb") as stream:
                stream.write(content.encode("utf-8") if isinstance(content, str) else content)
        mask = os.umask(0)
        os.umask(mask)
        for temp, path in staged:
            os.chmod(temp, 0o666 & ~mask)  # mkstemp makes 0600; a written file follows umask
            os.replace(temp, path)
    except BaseException as err:  # an OSError, or SIGINT / SIGTERM while staging
        for temp, _ in staged:
            if os.path.lexists(temp):
                os.unlink(temp)
        if not isinstance(err, OSError):
            raise
        where = err.filename or "the output"
        raise InputError(field, f"cannot write {where}: {err.strerror}") from None


def _spec_input(spec: str) -> dict[str, Path]:
    """The spec file SPEC names (a path or a bundled example), an input outputs must spare."""
    from symbackprop.spec import resolve_spec_path

    return {"SPEC": resolve_spec_path(spec)}


# --- commands --------------------------------------------------------------------------------


def _spec(args: argparse.Namespace):  # noqa: ANN202 - NetworkSpec, imported lazily
    from symbackprop.spec import load_spec

    return load_spec(args.spec)


def cmd_codegen(args: argparse.Namespace) -> int:
    from symbackprop.codegen import generate

    path = None if args.output is None else output_path(args.output, "-o")
    inputs = _spec_input(args.spec)
    if path is not None:
        check_outputs([path], "-o", inputs)
    source = generate(_spec(args))
    if path is not None:
        write_outputs({path: source}, "-o", inputs)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from symbackprop.export import torch_source

    path = None if args.output is None else output_path(args.output, "-o")
    inputs = _spec_input(args.spec)
    if path is not None:
        check_outputs([path], "-o", inputs)
    source = torch_source(_spec(args))
    if path is None:
        sys.stdout.write(source)
    else:
        write_outputs({path: source}, "-o", inputs)
        print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_derive(args: argparse.Namespace) -> int:
    from symbackprop.derive import derive
    from symbackprop.render import compile_pdf, markdown_figures, render_markdown, render_tex

    path = None if args.output is None else output_path(args.output, "-o")
    implied = None if path is None else FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if args.format and implied and implied != args.format:
        raise InputError(
            "-o",
            f"{path.name} has the suffix of a {implied} file but --format is {args.format}; "
            "change the suffix or leave --format out",
        )
    fmt = args.format or implied or "tex"
    inputs = _spec_input(args.spec)
    spec = _spec(args)
    if path is None and fmt == "pdf":
        path = output_path(f"{spec.name}.pdf", "-o")
    if path is not None:
        check_outputs([path], "-o", inputs)
    use_torch = False if args.no_check else _torch_witness(args)
    derivation = derive(spec)
    certificate = None
    if not args.no_check:
        from symbackprop.verify import certify

        certificate = certify(derivation, use_torch=use_torch)
    figures: dict[Path, str] = {}
    if fmt == "md":
        stem = None if path is None else path.stem
        document: str | bytes = render_markdown(derivation, certificate, stem)
        if path is not None:  # the figures, SVG files beside the document
            figures = {
                path.with_name(name): svg
                for name, svg in markdown_figures(derivation, stem).items()
            }
            check_outputs([path, *figures], "-o", inputs)
    else:
        document = render_tex(derivation, certificate)
        if fmt == "pdf":
            document = compile_pdf(document)
    if path is None:
        sys.stdout.write(document)
        if fmt == "md":
            print(
                "the document's figures are SVG files beside it: use -o FILE.md to write them",
                file=sys.stderr,
            )
        return EXIT_OK
    write_outputs({path: document, **figures}, "-o", inputs)
    print(f"wrote {path}" + "".join(f", {p.name}" for p in figures), file=sys.stderr)
    return EXIT_OK


def _torch_witness(args: argparse.Namespace) -> bool:
    """derive, train and demo: the PyTorch witness only when asked for (``--torch``).

    Importing torch alone costs more CPU (2.6-3 s) than those commands' own work on the
    bundled examples; ``check`` (whose job is the certificate) uses it when importable.
    """
    if not getattr(args, "torch", False):
        return False
    from symbackprop.verify import torch_available

    if not torch_available():
        raise InputError(
            "--torch",
            "the PyTorch witness needs torch, which is not importable (pip install torch)",
        )
    return True


def cmd_chain(args: argparse.Namespace) -> int:
    from symbackprop.calculus import chain_report

    print(chain_report(args.expr, args.var, args.format).rstrip("\n"))
    return EXIT_OK


def cmd_descent(args: argparse.Namespace) -> int:
    from symbackprop.calculus import descent, descent_figure

    plot = None if args.plot is None else output_path(args.plot, "--plot")
    result = descent(args.expr, args.start, lr=args.lr, steps=args.steps, tol=args.tol)
    if plot is not None:
        import io

        figure = descent_figure(result)
        buffer = io.BytesIO()
        suffix = plot.suffix.lower().lstrip(".") or "png"
        try:
            figure.savefig(buffer, format=suffix, dpi=120)
        except ValueError as err:
            raise InputError("--plot", str(err).splitlines()[0]) from None
        write_outputs({plot: buffer.getvalue()}, "--plot")
    lines = result.text.rstrip("\n").splitlines()
    print("\n".join(lines[:-1]))
    if plot is not None:
        print(f"plot written to {args.plot}")
    print(lines[-1])
    return EXIT_CHECK_FAILED if result.diverged else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from symbackprop.progress import Bar
    from symbackprop.verify import certify, check_arguments

    check_arguments(args.batch, args.seed)  # before any work: one line, exit 2
    spec = _spec(args)
    with Bar("certificate") as bar:
        certificate = certify(
            spec,
            batch=args.batch,
            seed=args.seed,
            use_torch=False if args.no_torch else None,
            progress=bar.update,
        )
    print(certificate.table())
    return EXIT_OK if certificate.passed else EXIT_CHECK_FAILED


def _number(value: float, digits: int) -> str:
    """Fixed point for ordinary magnitudes, exponent form for huge or tiny ones (a diverging
    loss of 2.9e61 is not printed with 62 digits)."""
    if math.isfinite(value) and value != 0 and not 1e-4 <= abs(value) < 1e6:
        return f"{value:.{digits}e}"
    return f"{value:.{digits}f}"


def _progress_line(p: object) -> str:
    kind = "accuracy" if p.classification else "rmse"
    line = f"epoch {p.epoch:>{len(str(p.epochs))}}/{p.epochs}  loss {_number(p.loss, 6)}  "
    if p.val_loss is not None:
        line += f"val loss {_number(p.val_loss, 6)}  val {kind} {_number(p.val_metric, 4)}  "
    if math.isfinite(p.test_metric):
        line += f"test {kind} {_number(p.test_metric, 4)}  "
    return line + f"{p.seconds:6.1f} s"


def _print_progress(p: object) -> None:
    print(_progress_line(p), flush=True)


def _train(
    spec: object, args: argparse.Namespace, use_torch: bool, record: bool = False
) -> object | None:
    """Shared by train and demo: check, train with progress, print the summary.

    None when the certificate failed (training refused; the table says why).
    """
    from symbackprop import training
    from symbackprop.progress import Bar

    given = {key: getattr(args, key, None) for key in TRAIN_OPTIONS}
    opts = training.options(spec, **given)
    bar = Bar("certificate")

    def checked(certificate: object) -> None:
        bar.close()
        print(certificate.table(), flush=True)
        print(flush=True)

    schedule = opts.schedule
    print(
        f"training {spec.name} on {args.data}: {opts.optimizer}, lr {opts.lr}"
        f"{'' if schedule == 'constant' else f' ({schedule} schedule)'}, "
        f"{opts.epochs} epochs, batch size {opts.batch_size}, seed {opts.seed}"
        + ("" if getattr(args, "split_seed", None) is None else f", split seed {args.split_seed}")
        + (", standardized features" if getattr(args, "standardize", False) else ""),
        flush=True,
    )
    epochs = Bar("training")

    def progress(p: object) -> None:
        epochs.close()
        _print_progress(p)
        epochs.update(p.epoch / p.epochs, f"epoch {p.epoch}/{p.epochs}")

    try:
        with bar, epochs:
            result = training.train(
                spec,
                args.data,
                opts,
                test_fraction=args.test_fraction,
                split_seed=getattr(args, "split_seed", None),
                val_fraction=getattr(args, "val_fraction", None) or 0.0,
                patience=getattr(args, "patience", None),
                standardize=getattr(args, "standardize", False),
                check=not getattr(args, "no_check", False),
                record=record,
                threads=getattr(args, "threads", None),
                progress=progress,
                checked=checked,
                use_torch=use_torch,
                checking=lambda fraction, what: bar.update(fraction, what),
            )
    except training.CheckFailed as failed:
        print(f"symbackprop: {failed}", file=sys.stderr)
        return None
    if result.certificate is None:
        print("certificate skipped (--no-check): the gradients were not checked on this data")
    if result.hint:
        print(f"note: {result.hint.removeprefix('; ')}")
    if result.dataset.class_names is not None:
        names = ", ".join(f"{i} = {name}" for i, name in enumerate(result.dataset.class_names))
        print(f"classes: {names}")
    if result.stopped_early:
        print(
            f"stopped early after epoch {len(result.history)}: no better validation loss for "
            f"{args.patience} epochs; kept the weights of epoch {result.best_epoch}"
        )
    elif result.best_epoch:
        print(f"kept the weights of epoch {result.best_epoch} (the best validation loss)")
    _summary(result)
    return result


# the options of a run that TrainSpec holds (None on the command line: the spec's)
TRAIN_OPTIONS = (
    "epochs",
    "lr",
    "batch_size",
    "optimizer",
    "seed",
    "schedule",
    "step_size",
    "gamma",
    "min_lr",
)


def _diverged(result: object) -> bool:
    """Say why a diverged run saves nothing (one line on stderr, then the final line)."""
    if not result.diverged:
        return False
    why = result.stop_reason or "the loss is not finite; try a smaller --lr"
    print(f"symbackprop: training diverged, no weights saved: {why}{result.hint}", file=sys.stderr)
    print(result.final_line())
    return True


# the files of ``train --out DIR`` (the module is SPEC_NAME.py)
OUT_FILES = {
    "weights": "weights.npz",
    "metrics": "metrics.json",
    "split": "split.json",
    "curve": "training_curve.png",
}


def _out_files(out: str, name: str) -> dict[str, Path] | None:
    """train --out: None for a weights file (.npz), else the folder's files, checked."""
    if out.lower().endswith(".npz"):
        return None
    if not out.strip():
        raise InputError("--out", "expected a file or folder name, got an empty string")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(
            "--out", f"{out} exists and is not a folder (a weights file must end in .npz)"
        )
    files = {"module": folder / f"{name}.py"}
    files.update({key: folder / file for key, file in OUT_FILES.items()})
    return files


def cmd_train(args: argparse.Namespace) -> int:
    inputs = {**_spec_input(args.spec), "--data": _data_input(args.data)}
    spec = _spec(args)
    folder = None if args.out is None else _out_files(args.out, spec.name)
    out = None if args.out is None or folder is not None else output_path(args.out, "--out")
    if out is not None:
        check_outputs([out], "--out", inputs)
    if folder is not None:
        check_outputs(folder.values(), "--out", inputs)
    if args.patience is not None and not args.val_fraction:
        raise InputError(
            "--patience", "early stopping watches a validation part: give --val-fraction too"
        )
    use_torch = _torch_witness(args)
    result = _train(spec, args, use_torch, record=folder is not None)
    if result is None:
        return EXIT_CHECK_FAILED
    if _diverged(result):
        return EXIT_CHECK_FAILED
    if out is not None:
        write_outputs({out: _weights_bytes(result)}, "--out", inputs)
        print(
            f"saved weights to {args.out}: load them with the generated module's load() "
            f"(symbackprop codegen {args.spec} -o {spec.name}.py writes it; --out DIR writes "
            "both)"
        )
    if folder is not None:
        _write_folder(result, folder, args, inputs)
    print(result.final_line())
    return EXIT_OK


def _write_folder(
    result: object, files: dict[str, Path], args: argparse.Namespace, inputs: dict
) -> None:
    from symbackprop import outputs

    contents: dict[Path, str | bytes] = {
        files["module"]: result.source,
        files["weights"]: _weights_bytes(result),
        files["metrics"]: outputs.metrics_json(result, args.data),
        files["split"]: outputs.split_json(result),
    }
    curve = outputs.curve_png(result)
    if curve is not None:
        contents[files["curve"]] = curve
    write_outputs(contents, "--out", inputs)
    print(f"wrote {args.out}:")
    for path in contents:
        print(f"  {path}")
    if curve is None:
        print("  (no training curve: matplotlib is not installed; pip install 'symbackprop[plot]')")
    print(f"  use it: python {files['module']} predict DATA --weights {files['weights']}")


def _data_input(data: str) -> Path | None:
    """The file --data names (None for the bundled digits)."""
    from symbackprop.data import DIGITS

    return None if data == DIGITS else Path(data)


def _weights_bytes(result: object) -> bytes:
    """The weights as the module's save writes them, with the input scaling and the class
    names when there are any (the module's load reads them back)."""
    import io

    import numpy

    buffer = io.BytesIO()
    numpy.savez(buffer, **result.weights)
    return buffer.getvalue()


def _summary(result: object) -> None:
    metric = "accuracy" if result.classification else "rmse"
    held = len(result.dataset.y_test)
    test = (
        f"test loss {_number(result.test_loss, 6)}, "
        if held
        else "no test part (--test-fraction 0), "
    )
    scores = f"train {metric} {_number(result.train_metric, 4)}"
    if held:
        scores += f", test {metric} {_number(result.test_metric, 4)} ({held} test samples)"
    if result.dataset.X_val is not None:
        scores += (
            f"; validation loss {_number(result.val_loss, 6)}, validation {metric} "
            f"{_number(result.val_metric, 4)} ({len(result.dataset.y_val)} samples)"
        )
    print(
        f"trained in {result.seconds:.1f} s: train loss {_number(result.train_loss, 6)}, "
        f"{test}{scores}"
    )


DEMO_SPEC = "digits_mlp"
DEMO_DIR = "symbackprop-demo"


ARTICLE_SPEC = "seed_mlp"


def _demo_files(out: Path, name: str, with_pdf: bool) -> dict[str, Path]:
    kinds = ("py", "tex", "md", "pdf") if with_pdf else ("py", "tex", "md")
    files = {kind: out / f"{name}.{kind}" for kind in kinds}
    files["npz"] = out / f"{name}_weights.npz"
    for kind in kinds[1:]:
        files[f"article.{kind}"] = out / f"{ARTICLE_SPEC}.{kind}"
    from symbackprop.figures import FIGURES

    for figure in FIGURES:  # the Markdown documents' figures
        files[f"svg.{figure}"] = out / f"{name}-{figure}.svg"
        files[f"article.svg.{figure}"] = out / f"{ARTICLE_SPEC}-{figure}.svg"
    return files


def _derivation_summary(derivation: object) -> list[str]:
    """The derived rules in plain text (the documents have them in full)."""
    lines = []
    seen = set()
    output_index = derivation.network.output_layer.index
    for index, layer in enumerate(derivation.layers, start=1):
        if layer is None or index == output_index:
            continue
        name = layer.activation.name
        if name in seen:
            continue
        seen.add(name)
        eq = derivation.number(f"activation.{name}")
        text = f"  ({eq}) {name}'(z) = {layer.derivative}"
        if layer.through_output is not None and layer.through_output != layer.derivative:
            text += f" = {layer.through_output} with a = {name}(z)"
        lines.append(text)
    out = derivation.output
    eq = derivation.number("delta.output")
    if out.softmax:
        lines.append(f"  ({eq}) output error: delta_k = q_k - p_k * sum_j q_j with q = {out.q}")
    else:
        lines.append(f"  ({eq}) output error: delta = {out.delta}")
    lines.append(
        f"  ({derivation.number('delta.hidden')}) delta_l = (W_(l+1)^T delta_(l+1)) * f_l'(z_l);"
        f"  ({derivation.number('grad.W')}) dL/dW_l = delta_l a_(l-1)^T;"
        f"  ({derivation.number('grad.b')}) dL/db_l = delta_l"
    )
    return lines


def cmd_demo(args: argparse.Namespace) -> int:
    import shutil

    from symbackprop.derive import derive
    from symbackprop.render import compile_pdf, document_figures, render_markdown, render_tex
    from symbackprop.spec import load_spec
    from symbackprop.verify import certify

    out = Path(args.out if args.out is not None else DEMO_DIR)
    if not str(out).strip():
        raise InputError("--out", "expected a folder name, got an empty string")
    if out.exists() and not out.is_dir():
        raise InputError("--out", f"{out} exists and is not a folder")
    spec = load_spec(DEMO_SPEC)
    with_pdf = shutil.which("pdflatex") is not None
    files = _demo_files(out, spec.name, with_pdf)
    inputs = {
        f"the bundled spec {name}": _spec_input(name)["SPEC"] for name in (DEMO_SPEC, ARTICLE_SPEC)
    }
    check_outputs(files.values(), "--out", inputs)
    existing = [str(p) for p in files.values() if os.path.lexists(p)]
    if existing and not args.force:
        raise InputError(
            "--out",
            f"{existing[0]} exists; use --force to overwrite or --out to choose another folder",
        )
    use_torch = _torch_witness(args)

    sizes = spec.shape_text()
    print(
        "symbackprop demo: the article's network -- two ReLU hidden layers and a softmax output --"
    )
    print(
        f"sized for the bundled 8x8 handwritten digits ({sizes}, "
        f"{spec.parameter_count} parameters)."
    )
    print()
    args.data = "digits"
    result = _train(spec, args, use_torch)
    if result is None or _diverged(result):
        return EXIT_CHECK_FAILED
    print("\nthe chain rule, as SymPy derived it (equation numbers of the documents):")
    print("\n".join(_derivation_summary(result.derivation)))
    tex = render_tex(result.derivation, result.certificate)
    article = derive(load_spec(ARTICLE_SPEC))
    article_certificate = certify(article, use_torch=use_torch)
    article_tex = render_tex(article, article_certificate)
    contents: dict[Path, str | bytes] = {
        files["py"]: result.source,
        files["tex"]: tex,
        files["md"]: render_markdown(result.derivation, result.certificate),
        files["npz"]: _weights_bytes(result),
        files["article.tex"]: article_tex,
        files["article.md"]: render_markdown(article, article_certificate),
    }
    for prefix, derivation in (("", result.derivation), ("article.", article)):
        for name, figure in document_figures(derivation.network.spec).items():
            contents[files[f"{prefix}svg.{name}"]] = figure.svg
    if with_pdf:
        contents[files["pdf"]] = compile_pdf(tex)
        contents[files["article.pdf"]] = compile_pdf(article_tex)
    write_outputs(contents, "--out", inputs)
    print()
    print(
        f"test accuracy: {100 * result.test_metric:.2f}% "
        f"on {len(result.dataset.y_test)} held-out digits"
    )
    article_doc = files.get("article.pdf", files["article.tex"])
    print("try next:")
    for command, why in (
        (f"open {article_doc}", "the article's 2-3-3-2 network, neuron by neuron"),
        (f"python {files['py']} --help", "the generated trainer needs only NumPy"),
        ("symbackprop check swish_mlp", "a custom activation x*sigmoid(x), certified"),
        ('symbackprop chain "sin(exp(x**2))"', "the chain rule on any function"),
        ('symbackprop descent "w1**2 + 3*w2**2" --start w1=3,w2=1', "gradient descent"),
    ):
        print(f"  {command:<56} # {why}")
    if not with_pdf:
        print("  (install pdflatex -- Debian: texlive-latex-base -- to get the PDF too)")
    print(result.final_line())
    print("files written:")
    for path in contents:
        print(f"  {path}")
    return EXIT_OK


# --- the parser ------------------------------------------------------------------------------


# ASCII: help must print under any locale
LOSSES_EPILOG = """\
losses, per sample; the batch loss is their mean over the samples of the batch (+ l2):
  mse                   1/2 * sum_k (yhat_k - y_k)^2: half the sum over the outputs,
                        not PyTorch's MSELoss (the mean over every output of every sample)
  cross_entropy         -sum_k y_k * log(yhat_k)  (softmax or sigmoid output)
  binary_cross_entropy  -sum_k [y_k * log(yhat_k) + (1 - y_k) * log(1 - yhat_k)]
                        (sigmoid output)
  custom                its expression in yhat and y, summed over the outputs"""
EXIT_EPILOG = """\
exit codes: 0 success, 1 a check failed (or training or descent diverged), 2 bad input,
  130 interrupted (SIGINT), 141 standard output closed early, 143 terminated (SIGTERM)"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="symbackprop",
        description=(
            "Derive backpropagation with SymPy; print it; generate a verified NumPy trainer."
        ),
        epilog=f"{LOSSES_EPILOG}\n\n{EXIT_EPILOG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"symbackprop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str, epilog: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    spec_help = "a .toml/.json spec file or a bundled example name (e.g. seed_mlp)"
    sub = command("codegen", cmd_codegen, "generate the standalone NumPy module")
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    sub.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")

    sub = command("derive", cmd_derive, "the derivation document (LaTeX, Markdown or PDF)")
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    sub.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write here (default: standard output; pdf: NAME.pdf)",
    )
    sub.add_argument(
        "--format", choices=("tex", "md", "pdf"), help="default: -o's suffix, else tex"
    )
    sub.add_argument("--no-check", action="store_true", help="leave the certificate out")
    _torch_arguments(sub)

    sub = command("chain", cmd_chain, "the chain rule on a composite function, step by step")
    sub.add_argument("expr", metavar="EXPR", help='e.g. "sin(exp(x**2))"')
    sub.add_argument("--var", help="the variable to differentiate by (default: x or the only one)")
    sub.add_argument("--format", choices=("text", "md", "tex"), default="text")

    sub = command("descent", cmd_descent, "gradient descent on a function of one or more variables")
    sub.add_argument("expr", metavar="EXPR", help='e.g. "w1**2 + 3*w2**2"')
    sub.add_argument("--start", required=True, help="start point, e.g. w1=3,w2=1")
    sub.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    sub.add_argument("--steps", type=int, default=100, help="most iterations (default 100)")
    sub.add_argument(
        "--tol", type=float, default=1e-8, help="stop when |grad| < tol (default 1e-8)"
    )
    sub.add_argument("--plot", metavar="FILE", help="draw the path (.png; needs matplotlib)")

    sub = command(
        "check", cmd_check, "the certificate: every gradient against independent witnesses"
    )
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    sub.add_argument("--batch", type=int, default=4, help="samples in the check batch (default 4)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the check point (default 0)")
    sub.add_argument("--no-torch", action="store_true", help="skip the PyTorch witness")

    sub = command("train", cmd_train, "generate, verify and train on a dataset", LOSSES_EPILOG)
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    _training_arguments(sub, data_required=True)
    _own_data_arguments(sub)
    sub.add_argument(
        "--out",
        metavar="PATH",
        help="FILE.npz: the weights alone; any other PATH is a folder that receives the "
        "module, weights.npz, metrics.json, split.json and training_curve.png",
    )

    sub = command("export", cmd_export, "a standalone PyTorch module equivalent to the spec")
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    sub.add_argument(
        "--torch", action="store_true", required=True, help="PyTorch (the one target for now)"
    )
    sub.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")

    sub = command(
        "demo", cmd_demo, "the main job: derive, generate, check and train the digits network"
    )
    sub.add_argument("--out", metavar="DIR", help=f"output folder (default: ./{DEMO_DIR})")
    sub.add_argument("--force", action="store_true", help="overwrite files of an earlier demo")
    _training_arguments(sub, data_required=False)
    return parser


def _training_arguments(sub: argparse.ArgumentParser, data_required: bool) -> None:
    if data_required:
        sub.add_argument(
            "--data",
            required=True,
            metavar="DATA",
            help="'digits' (bundled) or a .npz / .csv / .csv.gz file",
        )
    sub.add_argument("--epochs", type=int, help="default: the spec's [train] epochs")
    sub.add_argument("--lr", type=float, help="learning rate (default: the spec's)")
    sub.add_argument("--batch-size", type=int, help="mini-batch size (default: the spec's)")
    sub.add_argument(
        "--optimizer",
        choices=("sgd", "momentum", "adam", "rmsprop"),
        help="default: the spec's (torch.optim's definitions)",
    )
    sub.add_argument(
        "--seed",
        type=int,
        help="seed for initialisation and shuffling, and for the split unless --split-seed",
    )
    sub.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="held-out share of the data (default 0.2; 0: train on everything)",
    )
    _torch_arguments(sub)


def _own_data_arguments(sub: argparse.ArgumentParser) -> None:
    """train's options for a user's own data (README "Your own data")."""
    sub.add_argument(
        "--standardize",
        action="store_true",
        help="scale every feature by the training part's mean and standard deviation "
        "(saved with the weights, applied by the module; recommended for raw features)",
    )
    sub.add_argument("--split-seed", type=int, help="seed of the split alone (default: --seed)")
    sub.add_argument(
        "--val-fraction",
        type=float,
        help="a validation part of this share of the data, drawn after the test part",
    )
    sub.add_argument(
        "--patience",
        type=int,
        help="stop after N epochs without a better validation loss; keep the best weights",
    )
    sub.add_argument(
        "--schedule",
        choices=("constant", "step", "cosine"),
        help="learning-rate schedule per epoch: torch's StepLR or CosineAnnealingLR "
        "(T_max = epochs); default: the spec's",
    )
    sub.add_argument("--step-size", type=int, help="step schedule: epochs between decays")
    sub.add_argument("--gamma", type=float, help="step schedule: the decay factor")
    sub.add_argument("--min-lr", type=float, help="cosine schedule: the final learning rate")
    sub.add_argument(
        "--threads",
        type=int,
        help="BLAS threads while training (needs threadpoolctl; default: BLAS's own choice)",
    )
    sub.add_argument(
        "--no-check",
        action="store_true",
        help="skip the certificate (the gradients are then not checked on this data)",
    )


def _torch_arguments(sub: argparse.ArgumentParser) -> None:
    """--torch (the PyTorch witness in the certificate) and, kept for scripts, --no-torch."""
    choice = sub.add_mutually_exclusive_group()
    choice.add_argument(
        "--torch",
        action="store_true",
        help="add the PyTorch witness to the certificate (needs torch, whose import alone "
        "costs about 3 s CPU); without it, finite differences and (within its operation "
        "budget) the exact witness check every gradient",
    )
    choice.add_argument("--no-torch", action="store_true", help="no PyTorch witness (the default)")


class Terminated(BaseException):
    """SIGTERM, raised where the main thread runs, so that the command unwinds as on SIGINT:
    ``with TemporaryDirectory`` removes its folder and ``subprocess.run`` kills its child.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut cleanup
    raise Terminated


def _catch_sigterm() -> Callable[[], None]:
    """Install the SIGTERM handler; return what puts the previous one back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (and receives signals)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


def _stdout_closed() -> int:
    """The reader of standard output went away (``| head -1``): stop quietly.

    Python's recipe: point the descriptor at /dev/null, so that the interpreter's last flush
    of what is still buffered does not fail once more.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return EXIT_BROKEN_PIPE  # not a file (a test's capture): nothing to flush at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's exit
        return code
    except InputError as err:
        print(f"symbackprop: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("symbackprop: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("symbackprop: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        return _stdout_closed()


def main(argv: Sequence[str] | None = None) -> int:
    restore = _catch_sigterm()
    try:
        return _run(argv)
    except Terminated:  # arrived while an error was being reported
        return EXIT_TERMINATED
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
