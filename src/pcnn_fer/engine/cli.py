"""``pcnn train``, ``pcnn evaluate`` and ``pcnn cv``: argument parsing; the work is in train / evaluate / cv."""

from __future__ import annotations

import argparse
from typing import Any

from .precision import AMP_CHOICES

__all__ = ["add_align_flag", "add_parser", "run_train", "run_evaluate", "run_cv"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _cap(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _add_recipe_overrides(p: argparse.ArgumentParser) -> None:
    """Flags that override recipe fields (None = keep the recipe's value)."""
    g = p.add_argument_group("recipe overrides (default: the recipe's value)")
    g.add_argument("--model", help="model preset, e.g. an ablation baseline: small-resnet, small-resnet-wide, "
                                   "small-global, small-nomdim (see docs/robustness.md)")
    g.add_argument("--loss", choices=["two-phase", "ce"], help="training loss (ce: cross-entropy of the global "
                                                               "logits only, the ablation of the two-phase loss)")
    g.add_argument("--epochs", type=_positive_int, help="number of epochs")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--batch-size", type=_positive_int, help="global batch size (split across DDP processes)")
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=["step", "cosine"])
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--ema-decay", type=float, help="validate and ship an EMA of the weights (e.g. 0.998; 0 = off)")
    g.add_argument("--init-lr-scale", type=float,
                   help="with --init: learning-rate factor of the pretrained tensors (the heads keep --lr)")
    g.add_argument("--augment", help="augmentation preset (paper, strong, none)")
    g.add_argument("--input-size", type=_positive_int, help="model input size in pixels")
    g.add_argument("--max-steps", type=_cap, help="cap on optimiser steps per epoch (smoke tests; 0 = no cap)")
    g.add_argument("--max-val-samples", type=_cap, help="cap on validation samples (seeded subset; 0 = no cap)")
    g.add_argument("--select-metric", choices=["accuracy", "mean_class_accuracy"],
                   help="validation metric used for model selection")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run options")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    g.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="mixed precision: auto (default) = bf16 on CPUs with native bf16 and on CUDA, else fp32; "
                        "fp16 (CUDA only) uses a GradScaler")
    g.add_argument("--channels-last", action="store_true",
                   help="channels_last memory format (faster on GPUs; 1.2x for the small preset on a CPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the training model")
    g.add_argument("--balanced", action="store_true", help="class-balanced sampling (with replacement)")
    g.add_argument("--init", metavar="CHECKPOINT",
                   help="fine-tune from a trained PCNN: run dir, .safetensors, official .pth, or a bundled model "
                        "(default, fer2013); heads are mapped by class name")
    g.add_argument("--init-resnet", metavar="PATH",
                   help="initialise the trunks from a torchvision-format ResNet-18 (e.g. MS-Celeb) state dict")
    g.add_argument("--mode", help="training label mode for datasets that have several (FERPlus: majority, plurality, "
                                  "probability, crossentropy); default: the recipe's")
    g.add_argument("--val-mode", help="validation label mode (default: the recipe's, else the dataset default)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of train carved out (seeded, by subject when known) when the dataset has no "
                        "validation split (default 0.1)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--eval-batch-size", type=_positive_int, default=256)
    g.add_argument("--max-train-samples", type=_positive_int, help="train on a seeded subset of this size")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    g.add_argument("--cache-dir", help="decoded-tensor cache (default $PCNN_FER_CACHE or ~/.cache/pcnn_fer)")
    g.add_argument("--no-cache", action="store_true", help="decode the images without the on-disk cache")
    add_align_flag(g)


def add_align_flag(p: Any) -> None:
    """Add ``--align-faces / --no-align-faces`` (default None: the dataset's own default) to a parser or group."""
    p.add_argument("--align-faces", action=argparse.BooleanOptionalAction, default=None,
                   help="decode each image as its face, detected and aligned as pcnn predict does (images without a "
                        "face: centre crop, counted); default: on for JAFFE, off for other datasets")


def add_parser(subparsers: Any) -> None:
    """Add the ``train``, ``evaluate`` and ``cv`` verbs to the ``pcnn`` sub-parser collection."""
    t = subparsers.add_parser(
        "train", help="train a PCNN with a recipe",
        description="Train a PCNN on a dataset with a recipe; select the model on validation data.")
    t.add_argument("--dataset", help="dataset name (ferplus, fer2013, ckplus, jaffe, rafdb, affectnet, folder)")
    t.add_argument("--root", help="dataset root folder")
    t.add_argument("--recipe", "--preset", dest="recipe", default=None,
                   help="training recipe (see --list-presets; default paper)")
    t.add_argument("--list-presets", "--list-recipes", dest="list_recipes", action="store_true",
                   help="print every recipe with its cost and exit")
    t.add_argument("--out", help="run directory (checkpoints, logs, model.safetensors)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    t.add_argument("--stop-after", type=_positive_int, metavar="N",
                   help="stop after N epochs of this invocation (resumable with --resume)")
    t.add_argument("--time-budget", type=float, metavar="MIN",
                   help="wall-clock minutes for the whole run: after the first (and each warm-up) epoch the epoch "
                        "count is lowered so that training ends in time (never raised above --epochs)")
    t.add_argument("--select-on", metavar="SPLIT", help="select the model on this split instead of validation")
    t.add_argument("--allow-test-selection", action="store_true",
                   help="permit --select-on a test split (recorded in the results)")
    _add_recipe_overrides(t)
    _add_run_options(t)
    t.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "evaluate", help="evaluate a model on a dataset split",
        description="Evaluate a model (run directory, .safetensors, official .pth, or 'default') on a dataset split; "
                    "writes DIR/metrics.json and a confusion-matrix PNG.")
    e.add_argument("--checkpoint", default="default", help="run dir, model file, official .pth, or 'default'")
    e.add_argument("--dataset", required=True)
    e.add_argument("--root", required=True)
    e.add_argument("--split", help="split to evaluate (default: the dataset's test split, else its validation split)")
    e.add_argument("--mode", help="label mode (FERPlus: majority by default)")
    e.add_argument("--subset-list", metavar="FILE", help="restrict to a published subset list (occlusion, pose)")
    e.add_argument("--tta", default="none", choices=["none", "flip"], help="test-time augmentation")
    e.add_argument("--batch-size", type=_positive_int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--amp", default="none", choices=AMP_CHOICES,
                   help="autocast precision (auto = bf16 where the CPU/GPU has it natively; default fp32)")
    e.add_argument("--out", required=True, help="output folder for metrics.json and confusion.png")
    e.add_argument("--cache-dir")
    e.add_argument("--no-cache", action="store_true")
    add_align_flag(e)
    e.set_defaults(func=run_evaluate)

    c = subparsers.add_parser(
        "cv", help="subject-independent cross-validation (CK+, JAFFE)",
        description="Train and evaluate every subject-independent fold; writes DIR/cv.json (mean ± std).")
    c.add_argument("--dataset", required=True)
    c.add_argument("--root", required=True)
    c.add_argument("--folds", type=_positive_int, default=10, help="number of folds (kfold protocol)")
    c.add_argument("--protocol", default="kfold", choices=["kfold", "loso", "random"],
                   help="kfold / loso: subject-independent (default kfold); random: subject-dependent stratified "
                        "k-fold (a subject's images may be in train and test)")
    c.add_argument("--recipe", "--preset", dest="recipe", default="paper")
    c.add_argument("--out", required=True)
    c.add_argument("--only-folds", type=int, nargs="+", metavar="K", help="run only these fold indices")
    c.add_argument("--no-val", action="store_true",
                   help="do not carve a validation split from each fold's train (select the last epoch)")
    _add_recipe_overrides(c)
    _add_run_options(c)
    c.set_defaults(func=run_cv)


RECIPE_FLAGS = ("epochs", "lr", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "warmup_epochs",
                "label_smoothing", "ema_decay", "init_lr_scale", "augment", "input_size", "max_steps",
                "max_val_samples", "select_metric", "model", "loss")


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields set on the command line."""
    values = {k: getattr(args, k) for k in RECIPE_FLAGS if getattr(args, k, None) is not None}
    for k in ("max_steps", "max_val_samples"):
        if values.get(k) == 0:
            values[k] = None  # 0 = no cap
    return values


def train_options(args: argparse.Namespace, out: str) -> Any:
    """:class:`TrainOptions` from parsed arguments."""
    from .train import TrainOptions

    return TrainOptions(dataset=args.dataset, root=args.root, out=out, device=args.device, amp=args.amp,
                        channels_last=args.channels_last, compile=args.compile, balanced=args.balanced,
                        init_resnet=args.init_resnet, init=args.init, mode=args.mode, val_mode=args.val_mode,
                        val_fraction=args.val_fraction, seed=args.seed,
                        select_on=getattr(args, "select_on", None),
                        allow_test_selection=getattr(args, "allow_test_selection", False),
                        max_train_samples=args.max_train_samples, eval_batch_size=args.eval_batch_size,
                        progress=not args.no_progress, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                        time_budget=getattr(args, "time_budget", None), align_faces=args.align_faces)


def run_train(args: argparse.Namespace) -> int:
    """``pcnn train``."""
    from .recipes import format_recipes, get_recipe
    from .train import train

    if args.list_recipes:
        print(format_recipes())
        return 0
    overrides = recipe_overrides(args)
    if args.resume:
        extra = {"device": args.device if args.device != "auto" else None,
                 "progress": False if args.no_progress else None}
        train(None, None, resume=args.resume, overrides={**overrides, **extra}, stop_after=args.stop_after)
        return 0
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--root", args.root), ("--out", args.out))
               if not value]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or pass --resume RUN_DIR / --list-presets)")
    recipe = get_recipe(args.recipe or "paper").with_overrides(**overrides)
    train(train_options(args, args.out), recipe, stop_after=args.stop_after)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``pcnn evaluate``."""
    from .evaluate import evaluate_command

    return evaluate_command(args)


def run_cv(args: argparse.Namespace) -> int:
    """``pcnn cv``."""
    from .cv import cv_command

    return cv_command(args)
