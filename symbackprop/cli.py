"""The ``symbackprop`` command: parse, call the library, report, return an exit code.

Exit codes: 0 success, 1 a check failed (or descent diverged), 2 bad input (one line on
stderr, no traceback, no files written).  ``main(argv) -> int`` is tested in-process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from symbackprop import __version__
from symbackprop.errors import InputError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and an InputError (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(self.prog, message)


def write_outputs(files: dict[Path, str | bytes], field: str = "-o") -> None:
    """Write every file or none: each goes to a temporary file first, then all are renamed."""
    for path in files:
        if not path.name or path.is_dir():
            raise InputError(field, f"{path} is a directory, expected a file name")
    staged: list[tuple[str, Path]] = []
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((temp, path))
            with os.fdopen(handle, "wb") as stream:
                stream.write(content.encode("utf-8") if isinstance(content, str) else content)
        mask = os.umask(0)
        os.umask(mask)
        for temp, path in staged:
            os.chmod(temp, 0o666 & ~mask)  # mkstemp makes 0600; a written file follows umask
            os.replace(temp, path)
    except OSError as err:
        for temp, _ in staged:
            if os.path.exists(temp):
                os.unlink(temp)
        where = err.filename or "the output"
        raise InputError(field, f"cannot write {where}: {err.strerror}") from None


# --- commands --------------------------------------------------------------------------------


def _spec(args: argparse.Namespace):  # noqa: ANN202 - NetworkSpec, imported lazily
    from symbackprop.spec import load_spec

    return load_spec(args.spec)


def cmd_codegen(args: argparse.Namespace) -> int:
    from symbackprop.codegen import generate

    source = generate(_spec(args))
    if args.output is not None:
        if not args.output.strip():
            raise InputError("-o", "expected a file name, got an empty string")
        write_outputs({Path(args.output): source})
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return EXIT_OK


def cmd_derive(args: argparse.Namespace) -> int:
    from symbackprop.derive import derive
    from symbackprop.render import compile_pdf, render_markdown, render_tex

    derivation = derive(_spec(args))
    fmt = args.format or _format_from_suffix(args.output)
    certificate = None
    if not args.no_check:
        from symbackprop.verify import certify

        certificate = certify(derivation, use_torch=False if args.no_torch else None)
    if fmt == "md":
        document: str | bytes = render_markdown(derivation, certificate)
    else:
        document = render_tex(derivation, certificate)
        if fmt == "pdf":
            document = compile_pdf(document)
    if args.output is None and fmt != "pdf":
        sys.stdout.write(document)
        return EXIT_OK
    path = Path(args.output or f"{derivation.network.spec.name}.pdf")
    if not str(path).strip():
        raise InputError("-o", "expected a file name, got an empty string")
    write_outputs({path: document})
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _format_from_suffix(output: str | None) -> str:
    suffix = Path(output).suffix.lower() if output else ""
    return {".md": "md", ".pdf": "pdf"}.get(suffix, "tex")


def cmd_chain(args: argparse.Namespace) -> int:
    from symbackprop.calculus import chain_report

    print(chain_report(args.expr, args.var, args.format).rstrip("\n"))
    return EXIT_OK


def cmd_descent(args: argparse.Namespace) -> int:
    from symbackprop.calculus import descent, descent_figure

    if args.plot is not None and not args.plot.strip():
        raise InputError("--plot", "expected a file name, got an empty string")
    result = descent(args.expr, args.start, lr=args.lr, steps=args.steps, tol=args.tol)
    if args.plot:
        import io

        figure = descent_figure(result)
        buffer = io.BytesIO()
        suffix = Path(args.plot).suffix.lower().lstrip(".") or "png"
        try:
            figure.savefig(buffer, format=suffix, dpi=120)
        except ValueError as err:
            raise InputError("--plot", str(err).splitlines()[0]) from None
        write_outputs({Path(args.plot): buffer.getvalue()}, "--plot")
    lines = result.text.rstrip("\n").splitlines()
    print("\n".join(lines[:-1]))
    if args.plot:
        print(f"plot written to {args.plot}")
    print(lines[-1])
    return EXIT_CHECK_FAILED if result.diverged else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from symbackprop.verify import certify, check_arguments

    check_arguments(args.batch, args.seed)  # before any work: one line, exit 2
    certificate = certify(
        _spec(args), batch=args.batch, seed=args.seed, use_torch=False if args.no_torch else None
    )
    print(certificate.table())
    return EXIT_OK if certificate.passed else EXIT_CHECK_FAILED


def _print_progress(p: object) -> None:
    metric = "test accuracy" if p.classification else "test rmse"
    print(
        f"epoch {p.epoch:>{len(str(p.epochs))}}/{p.epochs}  loss {p.loss:.6f}  "
        f"{metric} {p.test_metric:.4f}  {p.seconds:6.1f} s",
        flush=True,
    )


def _train(spec: object, args: argparse.Namespace) -> object | None:
    """Shared by train and demo: check, train with progress, print the summary.

    None when the certificate failed (training refused; the table says why).
    """
    from symbackprop import training

    opts = training.options(
        spec,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        seed=args.seed,
    )

    def checked(certificate: object) -> None:
        print(certificate.table(), flush=True)
        print(flush=True)

    print(
        f"training {spec.name} on {args.data}: {opts.optimizer}, lr {opts.lr}, "
        f"{opts.epochs} epochs, batch size {opts.batch_size}, seed {opts.seed}",
        flush=True,
    )
    try:
        result = training.train(
            spec,
            args.data,
            opts,
            test_fraction=args.test_fraction,
            progress=_print_progress,
            checked=checked,
        )
    except training.CheckFailed as failed:
        print(f"symbackprop: {failed}", file=sys.stderr)
        return None
    _summary(result)
    return result


def cmd_train(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if args.out is not None and not args.out.strip():
        raise InputError("--out", "expected a file name, got an empty string")
    result = _train(spec, args)
    if result is None:
        return EXIT_CHECK_FAILED
    if result.diverged:
        print(
            "symbackprop: training diverged (the loss is not finite); no weights saved. "
            "Try a smaller --lr.",
            file=sys.stderr,
        )
        print(result.final_line())
        return EXIT_CHECK_FAILED
    if args.out:
        write_outputs({Path(args.out): _weights_bytes(result)}, "--out")
        print(f"saved weights to {args.out} (load them with the generated module's load())")
    print(result.final_line())
    return EXIT_OK


def _weights_bytes(result: object) -> bytes:
    import io

    import numpy

    buffer = io.BytesIO()
    numpy.savez(buffer, **result.params)
    return buffer.getvalue()


def _summary(result: object) -> None:
    metric = "accuracy" if result.classification else "rmse"
    print(
        f"trained in {result.seconds:.1f} s: train loss {result.train_loss:.6f}, test loss "
        f"{result.test_loss:.6f}, train {metric} {result.train_metric:.4f}, "
        f"test {metric} {result.test_metric:.4f} ({len(result.dataset.y_test)} test samples)"
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
    return files


def _derivation_summary(derivation: object) -> list[str]:
    """The derived rules in plain text (the documents have them in full)."""
    lines = []
    seen = set()
    for layer in derivation.layers[:-1]:
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
    from symbackprop.render import compile_pdf, render_markdown, render_tex
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
    existing = [str(p) for p in files.values() if p.exists()]
    if existing and not args.force:
        raise InputError(
            "--out",
            f"{existing[0]} exists; use --force to overwrite or --out to choose another folder",
        )

    sizes = "-".join(map(str, spec.sizes))
    print(
        "symbackprop demo: the article's network -- two ReLU hidden layers and a softmax output --"
    )
    print(
        f"sized for the bundled 8x8 handwritten digits ({sizes}, "
        f"{spec.parameter_count} parameters)."
    )
    print()
    args.data = "digits"
    result = _train(spec, args)
    if result is None:
        return EXIT_CHECK_FAILED
    print("\nthe chain rule, as SymPy derived it (equation numbers of the documents):")
    print("\n".join(_derivation_summary(result.derivation)))
    tex = render_tex(result.derivation, result.certificate)
    article = derive(load_spec(ARTICLE_SPEC))
    article_certificate = certify(article)
    article_tex = render_tex(article, article_certificate)
    contents: dict[Path, str | bytes] = {
        files["py"]: result.source,
        files["tex"]: tex,
        files["md"]: render_markdown(result.derivation, result.certificate),
        files["npz"]: _weights_bytes(result),
        files["article.tex"]: article_tex,
        files["article.md"]: render_markdown(article, article_certificate),
    }
    if with_pdf:
        contents[files["pdf"]] = compile_pdf(tex)
        contents[files["article.pdf"]] = compile_pdf(article_tex)
    write_outputs(contents, "--out")
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="symbackprop",
        description=(
            "Derive backpropagation with SymPy; print it; generate a verified NumPy trainer."
        ),
    )
    parser.add_argument("--version", action="version", version=f"symbackprop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
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
    sub.add_argument(
        "--no-torch", action="store_true", help="skip the certificate's PyTorch witness"
    )

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

    sub = command("train", cmd_train, "generate, verify and train on a dataset")
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    _training_arguments(sub, data_required=True)
    sub.add_argument("--out", metavar="WEIGHTS", help="save the trained weights (.npz)")

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
    sub.add_argument("--optimizer", choices=("sgd", "momentum", "adam"), help="default: the spec's")
    sub.add_argument("--seed", type=int, help="seed for initialisation, shuffling and the split")
    sub.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out share of the data (default 0.2)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except InputError as err:
        print(f"symbackprop: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("symbackprop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
