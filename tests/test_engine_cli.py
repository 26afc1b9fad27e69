"""The engine's command line: flags generated from the Recipe / TrainOptions fields, recipe files, up-front
validation, ``--threads``, progress and curves, and what a failed run leaves behind."""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from pcnn_fer.cli import build_parser
from pcnn_fer.cli.train import recipe_from_args, train_options
from pcnn_fer.engine.options import RESUMABLE_OVERRIDES, TrainOptions
from pcnn_fer.engine.recipes import Recipe, get_recipe, read_recipe_file
from pcnn_fer.errors import UsageError
from pcnn_fer.fileio import removed_on_failure, temporary_beside
from pcnn_fer.typed_fields import cli_fields, flag_name

#: A valid value different from the tiny recipe's for the plain-string recipe fields (whose choices are checked by
#: the recipe, not argparse). A new string field needs an entry here; every other type is derived.
STRING_VALUES = {"model": "small", "augment": "none", "loss": "ce"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_image_folder) -> Path:
    """A 3-class synthetic image folder with train/val/test splits."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))


def _subparser(verb: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[verb]


def _group_dests(verb: str, title_start: str) -> set[str]:
    group = next(g for g in _subparser(verb)._action_groups if (g.title or "").startswith(title_start))
    return {a.dest for a in group._group_actions}


def _other_value(recipe: Recipe, f) -> tuple[list[str], object]:
    """Command-line arguments setting field ``f`` to a valid value other than ``recipe``'s, and that value."""
    hint = typing.get_type_hints(Recipe)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    base, current, flag = hint, getattr(recipe, f.name), flag_name(f)
    if base is bool:
        return ([flag] if not current else ["--no-" + flag[2:]]), not current
    if typing.get_origin(base) is typing.Literal:
        value = next(c for c in typing.get_args(base) if c != current)
    elif base is int:
        value = (current or 0) + 1
    elif base is float:
        value = current / 2 if current else 0.5
    else:
        assert f.name in STRING_VALUES, f"add a test value for the new string field {f.name!r}"
        value = STRING_VALUES[f.name]
    return [flag, str(value)], value


@pytest.mark.parametrize("verb", ["train", "cv"])
def test_every_recipe_field_has_a_flag_that_sets_it(verb):
    fields_with_flags = {f.name for f in cli_fields(Recipe)}
    assert _group_dests(verb, "recipe overrides") == fields_with_flags  # no field without a flag, no stray flag
    assert {"epochs", "lr", "batch_size", "ema_decay", "max_steps", "model"} <= fields_with_flags
    parser, tiny = build_parser(), get_recipe("tiny")
    required = ["--dataset", "d", "--root", "r", "--out", "o"]
    for f in cli_fields(Recipe):
        assert f.metadata.get("help"), f"recipe field {f.name} has no help text"
        argv, value = _other_value(tiny, f)
        recipe = recipe_from_args(parser.parse_args([verb, *required, "--recipe", "tiny", *argv]))
        assert getattr(recipe, f.name) == value, f.name
        assert recipe.with_overrides(**{f.name: getattr(tiny, f.name)}) == tiny  # nothing else changed
    untouched = recipe_from_args(parser.parse_args([verb, *required, "--recipe", "tiny"]))
    assert untouched == tiny


def test_every_run_option_has_a_flag_that_sets_it():
    parser = build_parser()
    assert _group_dests("train", "run options") == {f.name for f in cli_fields(TrainOptions)}
    assert {"dataset", "root", "out"} == {f.name for f in fields(TrainOptions)} - {f.name
                                                                                     for f in cli_fields(TrainOptions)}
    args = parser.parse_args(["train", "--dataset", "folder", "--root", "r", "--out", "o", "--device", "cpu",
                              "--amp", "none", "--channels-last", "--compile", "--balanced", "--init", "default",
                              "--init-widen", "--label-rule", "m", "--val-label-rule", "v", "--val-fraction", "0.2",
                              "--seed", "3",
                              "--select-on", "test", "--allow-test-selection", "--max-train-samples", "9",
                              "--eval-batch-size", "7", "--no-progress", "--cache-dir", "c", "--no-cache",
                              "--time-budget", "1.5", "--threads", "2", "--align-faces"])
    opts = train_options(args)
    changed = {f.name for f in fields(TrainOptions) if getattr(opts, f.name) != f.default}
    assert changed == {f.name for f in fields(TrainOptions)} - {"init_resnet"}  # --init excludes --init-resnet
    assert TrainOptions.from_dict(opts.to_dict()) == opts
    zero = parser.parse_args(["train", "--dataset", "d", "--root", "r", "--out", "o", "--max-train-samples", "0"])
    assert train_options(zero).max_train_samples is None
    assert set(RESUMABLE_OVERRIDES) <= {f.name for f in fields(TrainOptions)} | {f.name for f in fields(Recipe)} | {
        "stop_after"}


@pytest.mark.parametrize("field_name, value", [("lr", math.nan), ("lr", math.inf), ("weight_decay", math.nan),
                                               ("momentum", -math.inf), ("epochs", 2.5), ("nesterov", "yes")])
def test_recipe_rejects_non_finite_and_mistyped_values(field_name, value):
    with pytest.raises(UsageError, match=field_name):
        get_recipe("tiny").with_overrides(**{field_name: value})


def test_lr_nan_is_refused_before_any_work(pcnn_subprocess, folder, tmp_path):
    proc = pcnn_subprocess(["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--lr", "nan",
                            "--out", tmp_path / "run", "--no-progress"])
    assert proc.returncode == 1, proc.stderr
    assert "recipe 'tiny': lr must be a finite number, got nan" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "precision" not in proc.stdout and not (tmp_path / "run").exists()


def test_recipe_files_json_and_yaml(tmp_path):
    (tmp_path / "short.json").write_text(json.dumps({"base": "tiny", "epochs": 3, "lr": 0.02}))
    short = read_recipe_file(tmp_path / "short.json")
    assert (short.name, short.epochs, short.lr, short.model) == ("short", 3, 0.02, "tiny")
    assert short.with_overrides(name="tiny", epochs=2, lr=0.01, description=get_recipe("tiny").description) == \
        get_recipe("tiny")
    (tmp_path / "full.json").write_text(json.dumps(short.to_dict()))
    assert read_recipe_file(tmp_path / "full.json") == short
    yaml = pytest.importorskip("yaml")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"base": "paper", "epochs": 5, "schedule": "cosine"}))
    assert (read_recipe_file(tmp_path / "r.yaml").epochs, read_recipe_file(tmp_path / "r.yaml").schedule) == (
        5, "cosine")


@pytest.mark.parametrize("content, message", [
    ('{"base": "tiny",\n "epochs": 3,,}', "bad.json:2: not valid JSON"),
    ('{"base": "tiny", "epochs": "3"}', "bad.json: recipe 'bad': epochs must be an integer, got '3'"),
    ('{"base": "tiny", "lrr": 0.1}', "bad.json: unknown recipe fields ['lrr']"),
    ('{"base": "nope"}', "bad.json: unknown recipe 'nope'"),
    ('{"epochs": 3}', "bad.json: incomplete recipe"),
    ('[1, 2]', "bad.json: a recipe file holds an object"),
])
def test_bad_recipe_files_are_one_line_naming_the_file(run_cli, folder, tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", tmp_path / "bad.json",
                            "--out", tmp_path / "run"])
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_recipe_file_run_writes_recipe_json_that_trains_again(run_cli, folder, tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps({"base": "tiny", "epochs": 1, "max_steps": 2}))
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", tmp_path / "mine.json",
                            "--lr", "0.02", "--out", tmp_path / "a", "--no-progress"])
    assert code == 0, err
    written = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert (written["name"], written["epochs"], written["max_steps"], written["lr"]) == ("mine", 1, 2, 0.02)
    assert written == json.loads((tmp_path / "a" / "results.json").read_text())["recipe"]
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe",
                            tmp_path / "a" / "recipe.json", "--out", tmp_path / "b", "--no-progress"])
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "recipe.json").read_text()) == written


def test_threads_are_applied_and_recorded(pcnn_subprocess, pcnn_env, folder, tmp_path):
    """OMP_NUM_THREADS=2 in the environment (torch's default); --threads 1 must win and be written into the
    results. The progress bar shows the loss without a torch warning in the middle of it (issue 13 item 17)."""
    pcnn_env["OMP_NUM_THREADS"] = "2"
    proc = pcnn_subprocess(["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--epochs", "1",
                            "--threads", "1", "--out", tmp_path / "run"])
    assert proc.returncode == 0, proc.stderr
    assert "loss=" in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["threads"] == 1 and results["options"]["threads"] == 1


@pytest.mark.slow
def test_evaluate_shows_progress_and_threads(pcnn_subprocess, pcnn_env, run_cli, folder, tmp_path, checkpoint):
    pcnn_env["OMP_NUM_THREADS"] = "2"
    args = ["evaluate", "--checkpoint", checkpoint, "--dataset", "folder", "--root", folder, "--split", "test",
            "--batch-size", "4", "--threads", "1"]
    proc = pcnn_subprocess([*args, "--out", tmp_path / "a"])
    assert proc.returncode == 0, proc.stderr
    assert "1 CPU thread(s)" in proc.stdout
    assert "predict" in proc.stderr and "/9 [" in proc.stderr  # a bar over 36 faces in batches of 4
    code, out, err = run_cli([*args, "--out", tmp_path / "b", "--no-progress"])
    assert code == 0 and "predict" not in err and "accuracy" in out


def test_curves_of_one_epoch_have_integer_ticks_and_legends_off_the_plot():
    from pcnn_fer.engine.logs import _pyplot, history_figure

    row = {"epoch": 1, "lr": 0.01, "train_loss": 1.1, "train_acc": 40.0, "val_acc": 35.0, "val_mean_class_acc": 30.0}
    for history in ([row], [row, {**row, "epoch": 2, "train_acc": 50.0}]):
        fig = history_figure(history)
        fig.canvas.draw()
        for ax in fig.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
            legend = ax.get_legend().get_window_extent()
            assert not legend.overlaps(ax.get_window_extent()), "legend drawn over the plot"
        _pyplot().close(fig)


def test_removed_on_failure_keeps_existing_folders_and_drops_temporaries(tmp_path):
    with pytest.raises(KeyError), removed_on_failure(tmp_path / "new" / "run") as run:
        temporary_beside(run / "model.safetensors")
        raise KeyError("boom")
    assert not (tmp_path / "new").exists()  # both created levels removed
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / ".old.x.tmp").write_text("not ours")
    with pytest.raises(KeyError), removed_on_failure(existing):
        temporary_beside(existing / "last.pt")
        raise KeyError("boom")
    assert [p.name for p in existing.iterdir()] == [".old.x.tmp"]
    with pytest.raises(KeyError), removed_on_failure(tmp_path / "kept", keep=lambda: True) as run:
        (run / "last.pt").write_text("x")
        raise KeyError("boom")
    assert (tmp_path / "kept" / "last.pt").is_file()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(run_cli, folder, tmp_path):
    args = ["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--lr", "1e30", "--no-progress"]
    code, _, err = run_cli([*args, "--out", tmp_path / "runs" / "diverged"])
    assert code == 1 and "training diverged" in err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "mine").mkdir()
    code, _, err = run_cli([*args, "--out", tmp_path / "mine"])
    assert code == 1 and (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir())



def test_old_runs_stored_names_still_load():
    """Run folders written before the renames (recipe ``label_mode``/``val_mode``, options ``mode``/``val_mode``)."""
    old_recipe = {**get_recipe("ferplus-compact").to_dict(), "label_mode": "plurality", "val_mode": "majority"}
    del old_recipe["label_rule"], old_recipe["val_label_rule"]
    recipe = Recipe.from_dict(old_recipe)
    assert (recipe.label_rule, recipe.val_label_rule) == ("plurality", "majority")
    opts = TrainOptions.from_dict({"dataset": "ferplus", "root": "r", "out": "o", "mode": "probability",
                                   "val_mode": "majority"})
    assert (opts.dataset_option, opts.val_dataset_option) == ("probability", "majority")
