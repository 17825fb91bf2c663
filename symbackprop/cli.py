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
        for temp, path in staged:
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


def cmd_check(args: argparse.Namespace) -> int:
    from symbackprop.verify import certify

    if args.batch < 1:
        raise InputError("--batch", f"expected a positive integer, got {args.batch}")
    certificate = certify(_spec(args), batch=args.batch, seed=args.seed, use_torch=False if args.no_torch else None)
    print(certificate.table())
    return EXIT_OK if certificate.passed else EXIT_CHECK_FAILED


# --- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="symbackprop",
        description="Derive backpropagation with SymPy; print it; generate a verified NumPy trainer.",
    )
    parser.add_argument("--version", action="version", version=f"symbackprop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    spec_help = "a .toml/.json spec file or a bundled example name (e.g. seed_mlp)"
    sub = command("codegen", cmd_codegen, "generate the standalone NumPy module")
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    sub.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")

    sub = command("check", cmd_check, "the certificate: every gradient against independent witnesses")
    sub.add_argument("spec", metavar="SPEC", help=spec_help)
    sub.add_argument("--batch", type=int, default=4, help="samples in the check batch (default 4)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the check point (default 0)")
    sub.add_argument("--no-torch", action="store_true", help="skip the PyTorch witness")
    return parser


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
