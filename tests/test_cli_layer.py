"""The ``pcnn_fer.cli`` layer: ``pcnn --help`` and every ``pcnn VERB --help`` import no torch (issue 14); the names
its help texts list agree with the library's registries; every verb's handler resolves; the package's public names
load lazily."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

import pcnn_fer
from pcnn_fer.cli import build_parser
from pcnn_fer.cli.common import (
    BASELINE_SUFFIXES,
    BUNDLED_MODEL_NAMES,
    DATASET_NAMES,
    FIXED_WIDTH_PRESET_NAMES,
    MODEL_PRESET_NAMES,
    LazyHandler,
)

VERBS = [[], ["bench"], ["data"], ["data", "stats"], ["predict"], ["train"], ["evaluate"], ["cv"], ["export"],
         ["serve"], ["robustness"]]

HELP_IN_A_FRESH_PROCESS = """
import json, sys
from pcnn_fer.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "numpy", "PIL", "cv2"))
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.parametrize("verb", VERBS, ids=[" ".join(v) or "pcnn" for v in VERBS])
def test_help_imports_no_torch(verb, pcnn_env):
    proc = subprocess.run([sys.executable, "-c", HELP_IN_A_FRESH_PROCESS, *verb, "--help"], env=pcnn_env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    *help_text, last = proc.stdout.strip().splitlines()
    assert json.loads(last) == {"code": 0, "heavy": []}
    assert help_text[0].startswith("usage: ")


def test_help_texts_list_the_registries():
    from pcnn_fer.data.datasets import DATASETS
    from pcnn_fer.models.pcnn import MODEL_PRESETS
    from pcnn_fer.weights import BUNDLED_MODELS

    assert BUNDLED_MODEL_NAMES == tuple(BUNDLED_MODELS)
    assert DATASET_NAMES == tuple(DATASETS)
    assert set(MODEL_PRESETS) == {*MODEL_PRESET_NAMES, *(f"{p}-{s}" for p in MODEL_PRESET_NAMES
                                                         for s in BASELINE_SUFFIXES)} - {
        f"{p}-resnet-wide" for p in FIXED_WIDTH_PRESET_NAMES}


def _verb_parsers(parser: argparse.ArgumentParser):
    """Every (sub-)parser below ``parser`` that has no sub-commands of its own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for action in subs:
        for child in action.choices.values():
            yield from _verb_parsers(child)


def test_every_verb_has_a_handler_that_resolves():
    handlers = {p.prog: p.get_default("func") for p in _verb_parsers(build_parser())}
    assert set(handlers) == {"pcnn bench", "pcnn data stats", "pcnn predict", "pcnn train", "pcnn evaluate",
                             "pcnn cv", "pcnn export", "pcnn serve", "pcnn robustness", "pcnn calibrate",
                             "pcnn occlusion"}
    lazy = {prog: h for prog, h in handlers.items() if isinstance(h, LazyHandler)}
    assert lazy  # the heavy verbs defer their import to run time
    for prog, handler in handlers.items():
        assert callable(handler), prog
    for prog, handler in lazy.items():  # the module:function named exists (a typo would surface only when run)
        module = __import__(handler.module, fromlist=[handler.function])
        assert callable(getattr(module, handler.function)), prog


def test_package_names_load_lazily():
    from pcnn_fer import PCNN, TwoPhaseLoss, create_model, load_model, save_model
    from pcnn_fer.faces import Recognizer, load_image
    from pcnn_fer.faces.imageio import load_image as defined_load_image
    from pcnn_fer.faces.recognizer import Recognizer as DefinedRecognizer
    from pcnn_fer.loss import TwoPhaseLoss as DefinedLoss
    from pcnn_fer.models.pcnn import PCNN as DefinedPCNN
    from pcnn_fer.models.pcnn import create_model as defined_create_model
    from pcnn_fer.weights import load_model as defined_load_model
    from pcnn_fer.weights import save_model as defined_save_model

    assert (PCNN, TwoPhaseLoss, create_model, load_model, save_model, Recognizer, load_image) == (
        DefinedPCNN, DefinedLoss, defined_create_model, defined_load_model, defined_save_model, DefinedRecognizer,
        defined_load_image)
    assert set(pcnn_fer.__all__) <= set(dir(pcnn_fer))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pcnn_fer.nothing  # noqa: B018


def test_readme_layout_matches_the_tree():
    """Every path and module the README's "Repository layout" names exists, and every module of the package is
    named there (by its path, or by its file name on its package's lines)."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    block = readme.split("## Repository layout", 1)[1].split("```", 2)[1]
    entries: list[list[str]] = []
    for line in block.strip("\n").splitlines():
        if line.startswith(" "):
            entries[-1][1] += " " + line.strip()
        else:
            path, description = line.split(None, 1)
            entries.append([path, description])
    named: set[Path] = set()
    for path, description in entries:
        assert (repo / path).exists(), path
        folder = repo / path if path.endswith("/") else (repo / path).parent
        named.add(repo / path)
        for name in re.findall(r"\b[\w]+\.py\b", description):
            assert (folder / name).is_file(), f"{path}: {name}"
            named.add(folder / name)
    package = repo / "src" / "pcnn_fer"
    modules = {p for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(str(p.relative_to(repo)) for p in modules - named) == []


@pytest.mark.parametrize("argv, dest, value", [
    (["bench", "--model", "tiny"], "model", "tiny"),
    (["bench", "--preset", "tiny"], "model", "tiny"),  # old spelling, hidden
    (["train", "--recipe", "tiny"], "recipe", "tiny"),
    (["train", "--preset", "tiny"], "recipe", "tiny"),  # old spelling, hidden
    (["train", "--list-presets"], "list_recipes", True),  # old spelling, hidden
    (["train", "--label-rule", "plurality"], "dataset_option", "plurality"),
    (["train", "--mode", "plurality"], "dataset_option", "plurality"),  # old spelling, hidden
    (["train", "--val-label-rule", "plurality"], "val_dataset_option", "plurality"),
    (["train", "--val-mode", "plurality"], "val_dataset_option", "plurality"),  # old spelling, hidden
    (["cv", "--dataset", "d", "--root", "r", "--out", "o", "--image-variant", "original"], "dataset_option",
     "original"),
    (["evaluate", "--dataset", "d", "--root", "r", "--out", "o", "--classes", "7"], "dataset_option", "7"),
    (["robustness", "--mode", "7"], "dataset_option", "7"),
    (["data", "stats", "--dataset", "d", "--root", "r", "--label-rule", "probability"], "dataset_option",
     "probability"),
])
def test_renamed_flags_and_their_old_spellings(argv, dest, value):
    from pcnn_fer.typed_fields import given_flag

    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    if dest.endswith("dataset_option"):
        assert given_flag(args, dest) == next(a for a in argv if a.startswith("--") and a[2:] not in (
            "dataset", "root", "out"))


def test_old_spellings_are_hidden_from_help():
    for verb in ("bench", "train", "evaluate", "data"):
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[verb]
        text = sub.format_help() if verb != "data" else next(
            a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices["stats"].format_help()
        assert not re.search(r"--(preset|list-presets|mode|val-mode)\b", text), verb
        assert {"bench": "--model NAME", "train": "--label-rule RULE"}.get(verb, "--classes") in text, verb
