"""codegen keeps the templates' compiled code between processes, and it changes nothing.

A module rendered from the compiled code read back from the cache is the module compiled
from source, byte for byte; a cache folder that cannot be written only means no cache."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest

from symbackprop import codegen
from symbackprop.derive import derive
from symbackprop.spec import load_spec


def environment(cache: jinja2.BytecodeCache | None) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(codegen.template_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        bytecode_cache=cache,
    )


def render(env: jinja2.Environment, name: str) -> str:
    return env.get_template("numpy/module.py.j2").render(codegen.context(derive(load_spec(name))))


@pytest.mark.parametrize("name", ["seed_mlp", "residual_mlp"])
def test_the_cached_code_renders_the_same_module(name: str, tmp_path: Path) -> None:
    expected = render(environment(None), name)
    cache = codegen._CompiledTemplates(directory=str(tmp_path), pattern="symbackprop-%s.cache")
    assert render(environment(cache), name) == expected  # compiles, and writes the cache
    written = sorted(tmp_path.iterdir())
    assert written, "nothing was cached"
    loaded = []
    original = cache.load_bytecode

    def load(bucket: jinja2.bccache.Bucket) -> None:
        original(bucket)
        loaded.append(bucket.code is not None)

    cache.load_bytecode = load  # type: ignore[method-assign]
    assert render(environment(cache), name) == expected  # from the cache
    assert loaded and all(loaded)
    assert codegen.generate(load_spec(name)) == expected


def test_a_folder_that_cannot_be_written_means_no_cache(tmp_path: Path) -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        folder = tmp_path / "not-a-folder"
        folder.write_text("")  # writing inside a file fails even for root
    else:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
    cache = codegen._CompiledTemplates(directory=str(folder), pattern="symbackprop-%s.cache")
    assert render(environment(cache), "seed_mlp") == render(environment(None), "seed_mlp")


def test_the_environment_variable_turns_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBACKPROP_NO_TEMPLATE_CACHE", "1")
    assert codegen._compiled_templates() is None
    monkeypatch.delenv("SYMBACKPROP_NO_TEMPLATE_CACHE")
    assert isinstance(codegen._compiled_templates(), (codegen._CompiledTemplates, type(None)))
