"""The ``segkit`` command: argument parsing and printing only; every command calls the library."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import segkit._env  # noqa: F401
from segkit import __version__
from segkit.demo import DEMO_TASKS
from segkit.errors import ConfigError, SegkitError, command_line_names

_COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}

#: ``--tta``'s help (the values are read by segkit.inference.parse_tta)
THRESHOLD_HELP = (
    "a multi-label model's probability threshold: one for every class or one per class, e.g. "
    "0.4,0.6 (default: what training recorded, else 0.5); predict: also a binary model's"
)
TTA_HELP = (
    "test-time augmentation: flip (average with the mirrored prediction), scales=0.75,1,1.25 "
    "(average over input scales) or flip+scales=..."
)


def _window_arguments(s: argparse.ArgumentParser, tile_help: str) -> None:
    """``--tile``, ``--overlap`` and ``--blend`` (sliding windows), for predict and evaluate."""
    s.add_argument("--tile", type=int, default=None, metavar="N", help=tile_help)
    s.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        metavar="F",
        help="with --tile: fraction of a window that neighbouring windows share (default 0.25)",
    )
    s.add_argument(
        "--blend",
        default="gaussian",
        help="with --tile: gaussian (window centres weigh more; default) or uniform (plain mean)",
    )
    _runtime_arguments(s)


def _runtime_arguments(s: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--precision`` (what runs the model), for predict and evaluate."""
    s.add_argument(
        "--runtime",
        default="auto",
        help="what runs the model: auto (default: onnxruntime on the CPU where installed, else "
        "torch; docs/benchmarks.md), torch or onnxruntime (CPU; the ONNX export is cached "
        "beside the checkpoint, keyed by its content)",
    )
    s.add_argument(
        "--precision",
        default="auto",
        help="auto (the measured default for the device), fp32 (with --runtime torch: the exact "
        "reference), bf16 (torch: channels_last under bfloat16 autocast) or int8 "
        "(onnxruntime: the model segkit export --int8 made)",
    )


def command(name: str) -> Callable:
    """Register a ``cmd_<name>`` function as the handler of ``segkit <name>``."""

    def wrap(fn: Callable) -> Callable:
        _COMMANDS[name] = fn
        return fn

    return wrap


def print_metrics(result: dict[str, Any]) -> None:
    """The metric table, with Helen's ``f1_<name>=<value>`` lines where they apply."""
    from segkit.metrics import format_f1_lines

    print(format_f1_lines(result))
    others = {
        k: v
        for k, v in result.items()
        if not k.startswith(("f1_", "iou_", "precision_", "recall_"))
    }
    for key, value in others.items():
        print(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}")


@command("demo")
def cmd_demo(args: argparse.Namespace) -> None:
    from segkit.demo import run_demo

    run_demo(args.out, task=args.task, epochs=args.epochs, cars=args.cars, faces=args.faces)


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from segkit.api import train
    from segkit.config import load_config
    from segkit.engine.distributed import process_rank

    resume, overrides = args.resume, list(args.overrides)
    if isinstance(resume, str) and "=" in resume and not Path(resume).exists():
        resume, overrides = True, [resume, *overrides]  # `--resume key=value`: an override
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=resume, overwrite=args.overwrite)
    code = 130 if result.get("status") == "interrupted" else 0
    if process_rank() != 0:  # under torchrun rank 0 speaks for every process
        return code
    best = result.get("best_value")
    if best is not None:
        print(
            f"training {result['status'].replace('_', ' ')} after {result['epochs']} epoch(s): best "
            f"{result['monitor']}={best:.4f} at epoch {result['best_epoch']}"
        )
    out = Path(result["out_dir"])
    written = ["best.pt", "last.pt", "history.csv", "config.yaml", "curves.png", "predictions.png"]
    print(f"run folder: {out}  ({', '.join(n for n in written if (out / n).is_file())})")
    return code


@command("stats")
def cmd_stats(args: argparse.Namespace) -> None:
    from segkit.api import channel_stats, check_json_path, class_stats, training_set, write_json
    from segkit.config import load_config

    if args.json:
        check_json_path(args.json)
    cfg = load_config(args.config, list(args.overrides))
    train_set = training_set(cfg)
    classes = class_stats(cfg, train_set)  # the labels first: quick, and the table is long
    print_class_table(classes)
    result = {**channel_stats(cfg, train_set), "class_balance": classes}
    print(
        f"per-channel statistics of {result['images']} training image(s) of "
        f"{result['dataset']!r} on the input scale (no-data left out):"
    )
    for i, (mean, std) in enumerate(zip(result["mean"], result["std"])):
        print(f"  channel {i}: mean={mean:.6g} std={std:.6g}")
    mean = ",".join(f"{v:.6g}" for v in result["mean"])
    std = ",".join(f"{v:.6g}" for v in result["std"])
    print(f"use them: augment.normalize=dataset augment.mean=[{mean}] augment.std=[{std}]")
    if args.json:
        written = write_json(args.json, result)
        print(
            f"wrote {written}; or use the file: augment.normalize=dataset augment.stats={written}"
        )


def print_class_table(stats: dict[str, Any]) -> None:
    """``segkit stats``'s class table (:func:`segkit.api.class_stats`)."""
    rows = stats["classes"]
    if rows is None:
        print(f"classes: {stats['note']}")
        return
    ignore = stats["ignore_index"]
    labelled, ignored = stats["labelled_pixels"], stats["ignored_pixels"]
    left_out = (
        f"; label {ignore} left out: {ignored} pixels, "
        f"{100 * ignored / max(1, labelled + ignored):.2f}%"
        if ignore is not None
        else ""
    )
    print(
        f"classes in the {stats['images']} training label maps ({labelled} labelled pixels{left_out}):"
    )
    width = max(len(r["name"]) for r in rows)
    rules = [k for k in ("median_frequency", "inverse") if k in rows[0]]
    print(f"  {'id':>3} {'class':<{width}} {'pixels':>12} {'share':>8} {'in images':>9}"
          + "".join(f" {r:>16}" for r in rules))  # fmt: skip
    for r in rows:
        weights = "".join(f" {r[k]:>16.4g}" for k in rules)
        print(
            f"  {r['id']:>3} {r['name']:<{width}} {r['pixels']:>12} {100 * r['share']:>7.2f}% "
            f"{r['images']:>9}{weights}"
        )
    if rules:
        print("weights: loss.class_weights=auto (= median_frequency) or inverse (docs/models.md)")


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> None:
    from segkit.api import evaluate

    result = evaluate(
        args.checkpoint,
        root=args.data,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        json_out=args.json,
        tta=args.tta,
        threshold=args.threshold,
        tile=args.tile,
        overlap=args.overlap,
        blend=args.blend,
        report=args.report,
        report_n=args.report_n,
        boundary=args.boundary,
        runtime=args.runtime,
        precision=args.precision,
    )
    print_metrics(result)
    if args.json:
        print(f"wrote {args.json}")
    if args.report:
        print(f"report: {Path(args.report) / 'index.html'}")


@command("score")
def cmd_score(args: argparse.Namespace) -> None:
    from segkit.api import check_json_path, score, write_json

    if args.json:
        check_json_path(args.json)
    result, note = score(args.gt_dir, args.pred_dir, args.classes, args.ignore_index, args.ids)
    if note:
        print(note)
    print_metrics(result)
    if args.json:
        print(f"wrote {write_json(args.json, result)}")


@command("predict")
def cmd_predict(args: argparse.Namespace) -> None:
    from segkit.inference import PredictOptions, Predictor

    options = PredictOptions(
        batch_size=args.batch_size,
        num_workers=args.workers,
        overlay=args.overlay,
        tta=args.tta,
        tile=args.tile,
        overlap=args.overlap,
        blend=args.blend,
        runtime=args.runtime,
        precision=args.precision,
        skip_bad=args.skip_bad,
        overwrite=args.overwrite,
        color=args.color,
        ids=args.ids,
        threshold=args.threshold,
        polygons=args.polygons,
        polygon_epsilon=args.polygon_epsilon,
        polygon_min_area=args.polygon_min_area,
        progress=sys.stderr.isatty(),  # no bar drawn into log files
        **({} if args.max_pixels is None else {"max_pixels": args.max_pixels or None}),
    )
    result = Predictor(args.checkpoint, options, args.device).predict(
        args.inputs, args.out, rle_csv=args.rle
    )
    if result.get("skipped"):
        print(f"skipped {len(result['skipped'])} unreadable images", file=sys.stderr)
    count = result["count"]
    print(
        f"predicted {count} image{'s' * (count != 1)} into {args.out} "
        f"({result.get('images_per_s', 0):.1f} images/s)"
    )
    if args.rle:
        print(f"wrote {args.rle}")


#: ``segkit prepare`` / ``segkit synth`` options handed to the step only when given
#: (their parser default is argparse.SUPPRESS); a step refuses those it does not take
STEP_OPTIONS = (
    "size",
    "workers",
    "threshold",
    "soft",
    "overwrite",
    "layout",
    "test",
    "split",
    "crowd",
)


def _step_options(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key in STEP_OPTIONS if hasattr(args, key)}


def _report(result: str | tuple[str, list[str]]) -> None:
    """Print a data set step's message, and its notes on stderr."""
    message, notes = (result, []) if isinstance(result, str) else result
    print(message)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


@command("prepare")
def cmd_prepare(args: argparse.Namespace) -> None:
    from segkit.data.registry import run_dataset_step

    _report(run_dataset_step("prepare", args.dataset, args.src, args.dst, **_step_options(args)))


@command("synth")
def cmd_synth(args: argparse.Namespace) -> None:
    from segkit.data.registry import run_dataset_step

    options = {"n": args.n, "seed": args.seed, **_step_options(args)}  # n, seed: every step's
    _report(run_dataset_step("synth", args.dataset, args.dst, **options))


@command("export")
def cmd_export(args: argparse.Namespace) -> None:
    if args.int8 or args.calib is not None or args.data is not None:
        return _export_int8(args)
    if not (args.onnx or args.hub):
        raise ConfigError("segkit export needs --onnx OUT, --hub DIR or --int8; see --help.")
    if args.hub:
        from segkit.hub import export_hub

        print(f"wrote {export_hub(args.checkpoint, args.hub, overwrite=args.overwrite)}")
        return
    from segkit.export import export_onnx

    given = {"labels": args.labels, "threshold": args.threshold}
    result = export_onnx(args.checkpoint, args.onnx, check=args.check, opset=args.opset, **given)
    print(f"wrote {args.onnx}")
    if args.check and args.labels:
        print(f"onnxruntime labels differing from PyTorch's: {100 * result['max_abs_diff']:.3g}%")
    elif args.check:
        print(f"onnxruntime max abs difference from PyTorch: {result['max_abs_diff']:.3g}")


def _export_int8(args: argparse.Namespace) -> None:
    """``segkit export --int8``: the int8 model beside the checkpoint (and a copy at --onnx)."""
    if not args.int8:
        given = "--calib" if args.calib is not None else "--data"
        raise ConfigError(f"{given} is for --int8 (the calibration); add --int8 or leave it out.")
    if args.hub or args.labels or args.check:
        other = "--hub" if args.hub else "--labels" if args.labels else "--check"
        raise ConfigError(
            f"--int8 quantises the logits graph that --precision int8 runs, not {other}; "
            f"leave {other} out."
        )
    from segkit.api.quantization import CALIBRATION_IMAGES, export_int8

    calib = CALIBRATION_IMAGES if args.calib is None else args.calib
    result = export_int8(args.checkpoint, args.onnx, calib=calib, root=args.data)
    print(f"wrote {result['path']} (int8, calibrated on {calib} training images)")
    if args.onnx:
        print(f"wrote {args.onnx}")


def _print_matches(what: str, pattern: str, lister: Callable[[str], list[str]]) -> int:
    """Print the names ``lister`` finds for ``pattern``; on none, say so and what would match."""
    names = lister(pattern)
    if names:
        print("\n".join(names))
        return 0
    from segkit.errors import suggest

    wider = f"*{pattern}*"
    found = [] if any(c in pattern for c in "*?[") else lister(wider)
    hint = f" '{wider}' matches {len(found)}, e.g. {', '.join(found[:5])}." if found else ""
    print(
        f"No {what} matches {pattern!r} (a wildcard pattern: * any text, ? one character)."
        f"{hint or suggest(pattern, lister('*'))} `segkit {what}s` lists them all.",
        file=sys.stderr,
    )
    return 1


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    from segkit.models import list_models

    return _print_matches("model", args.pattern, list_models)


@command("encoders")
def cmd_encoders(args: argparse.Namespace) -> int:
    from segkit.models import list_encoders

    code = _print_matches("encoder", args.pattern, list_encoders)
    print("(any timm backbone also works as tu-<timm name>)", file=sys.stderr)
    return code


def _demo_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--out",
        default="segkit-demo",
        help="folder for everything the demo writes (default: %(default)s)",
    )
    s.add_argument(
        "--task", choices=DEMO_TASKS, default=DEMO_TASKS[0], help="which example task to run"
    )
    s.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: the demo's own)"
    )
    s.add_argument(
        "--cars",
        type=int,
        default=None,
        help="--task carvana: synthetic cars, 8 views each (default: the demo's own, 16)",
    )
    s.add_argument(
        "--faces", type=int, default=60, help="--task helen: synthetic faces (default: 60)"
    )


def _train_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("config", help="YAML config, e.g. examples/carvana_single_class/config.yaml")
    s.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. train.epochs=5 data.root=/data"
    )
    s.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="continue from last.pt of the run folder (or from the given checkpoint)",
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a run folder that holds an earlier run, replacing its files",
    )


def _stats_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("config", help="YAML config of the training run")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data")
    s.add_argument(
        "--json",
        default=None,
        help="also write them as JSON here, for augment.stats (augment.normalize: dataset)",
    )


def _evaluate_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    s.add_argument(
        "--data", default=None, help="data root (default: the one the model was trained on)"
    )
    s.add_argument(
        "--split",
        default=None,
        help="split to score (default: the config's data.test_split: 'test' for Helen, 'val' "
        "for the Carvana example, whose Kaggle test set has no masks); 'val' = data.val_split, "
        "or without one the part of data.train_split training held out; './val' = the folder "
        "val itself; a list file (one id a line) = the samples it names",
    )
    s.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch, windows per batch with --tile (default: data.batch_size)",
    )
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    s.add_argument("--json", default=None, help="also write the metrics as JSON here")
    s.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="write a report page here: DIR/index.html, per_image.csv, worst/best images",
    )
    s.add_argument(
        "--report-n", type=int, default=8, help="worst and best images the report shows (8)"
    )
    s.add_argument(
        "--boundary",
        type=float,
        default=None,
        metavar="PX",
        help="also boundary IoU, boundary F and HD95 at this pixel tolerance (in the report)",
    )
    s.add_argument("--tta", default=None, help=TTA_HELP)
    s.add_argument("--threshold", default=None, help=THRESHOLD_HELP)
    _window_arguments(s, "score each image at its native resolution, in sliding windows of N px")


def _score_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("gt_dir", help="folder of ground-truth label PNGs")
    s.add_argument("pred_dir", help="folder of predicted label PNGs (matched by file name)")
    s.add_argument(
        "--classes",
        default=None,
        help="a data set's label set (e.g. helen), a class count, a checkpoint, or a file of "
        "names (default: the count the labels show)",
    )
    s.add_argument(
        "--ignore-index",
        type=int,
        default=None,
        metavar="N",
        help="ground-truth value to leave out (default: the one --classes' data set or "
        "checkpoint records; without --classes, 255 beside other labels)",
    )
    s.add_argument(
        "--ids",
        action="store_true",
        help="both folders hold class ids (predict --ids; Cityscapes' labelTrainIds), though "
        "the --classes checkpoint writes the data set's own values (labelIds)",
    )
    s.add_argument("--json", default=None, help="also write the metrics as JSON here")


def _predict_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    s.add_argument("inputs", nargs="+", help="image files or folders")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--overlay", action="store_true", help="also write colour overlays")
    s.add_argument(
        "--color",
        action="store_true",
        help="also write <name>_color.png in the data set's class colours",
    )
    s.add_argument(
        "--ids",
        action="store_true",
        help="write class ids 0..C-1 even where the data set has its own label values "
        "(Cityscapes: trainIds instead of labelIds)",
    )
    s.add_argument("--rle", default=None, help="binary tasks: write a Kaggle img,rle_mask CSV here")
    _polygon_arguments(s)
    s.add_argument("--threshold", default=None, help=THRESHOLD_HELP)
    s.add_argument("--tta", default=None, help=TTA_HELP)
    _window_arguments(s, "predict at the native resolution in sliding windows of N px")
    _predict_run_arguments(s)


def _polygon_arguments(s: argparse.ArgumentParser) -> None:
    """predict's ``--polygons`` (labelme / COCO JSON) and how outlines are simplified."""
    s.add_argument(
        "--polygons",
        default=None,
        metavar="FORMAT",
        help="also write the predicted objects as polygons: labelme (<name>.json per image and "
        "labels.txt, to correct in labelme), coco (one annotations.json; objects with holes as "
        "RLE) or coco-rle (every object as RLE)",
    )
    s.add_argument(
        "--polygon-epsilon",
        type=float,
        default=0.5,
        metavar="PX",
        help="how far a simplified outline may stray from the mask, in pixels (0: every corner)",
    )
    s.add_argument(
        "--polygon-min-area",
        type=int,
        default=0,
        metavar="PX",
        help="leave out objects (and fill holes) of fewer pixels (default 0: keep all)",
    )


def _predict_run_arguments(s: argparse.ArgumentParser) -> None:
    """predict's batching, workers, device and what to do with bad inputs and existing files."""
    s.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="images per forward pass (windows per pass with --tile)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        help="loader worker processes (0: threads of this process read; fastest on 2 cores)",
    )
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    s.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable images (and those over --max-pixels) with a warning",
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that exist already (refused by default; inputs never are)",
    )
    s.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse images with more pixels, before decoding them (default: about 179 million, "
        "segkit.data.io.MAX_IMAGE_PIXELS; 0: no limit)",
    )


def _prepare_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("dataset", help="which data set's release SRC holds (e.g. carvana, helen)")
    s.add_argument("src", help="the release as downloaded (never modified)")
    s.add_argument("dst", help="where the prepared copy goes")
    s.add_argument(
        "--size",
        type=int,
        default=argparse.SUPPRESS,
        help="carvana: side of the square output (default: 128)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=argparse.SUPPRESS,
        help="carvana, coco, labelme, yolo_seg: threads (default: CPU count)",
    )
    s.add_argument(
        "--split",
        default=argparse.SUPPRESS,
        help="coco, labelme, yolo_seg: the export's split to rasterise (as the reader's "
        "split; written to DST/SPLIT; default: the export without a split)",
    )
    s.add_argument(
        "--crowd",
        choices=("object", "ignore"),
        default=argparse.SUPPRESS,
        help="coco: iscrowd annotations are objects (default) or left out (255)",
    )
    s.add_argument(
        "--threshold",
        type=int,
        default=argparse.SUPPRESS,
        help="carvana: read masks with soft (anti-aliased) edges as car where value >= THRESHOLD "
        "(e.g. 128 for 0..255 masks; default: masks must hold 0/1 or 0/255 only)",
    )
    s.add_argument(
        "--soft",
        action="store_true",
        default=argparse.SUPPRESS,
        help="carvana: also write soft targets, the fraction of each small pixel that is car "
        "(soft_masks/, for data.soft_targets=true)",
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        default=argparse.SUPPRESS,
        help="redo files that are already prepared",
    )


def _synth_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "dataset",
        help="which data set's layout to write (carvana, helen, voc, cityscapes, color_masks, "
        "multilabel)",
    )
    s.add_argument("dst", help="folder to write the data set into")
    s.add_argument(
        "--n",
        type=int,
        default=2,
        help="cars (16 views each), faces, images (voc, color_masks, multilabel) or frames per city "
        "and split (cityscapes) (default: 2)",
    )
    s.add_argument(
        "--seed", type=int, default=0, help="random seed of the synthetic images (default: 0)"
    )
    s.add_argument(
        "--layout",
        choices=["split", "official"],
        default=argparse.SUPPRESS,
        help="helen layout (default: split)",
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        default=argparse.SUPPRESS,
        help="write into folders that already hold files (same names replaced, others kept)",
    )
    s.add_argument(
        "--test",
        type=int,
        default=argparse.SUPPRESS,
        help="helen: faces in the test split (default: a fifth of --n, at least 1)",
    )


def _export_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--onnx", help="output .onnx path (with --int8: a copy of the int8 model)")
    out.add_argument(
        "--hub",
        metavar="DIR",
        help="a Hub folder (config.json + model.safetensors + README.md) that segkit predict "
        "and, for smp models, segmentation_models_pytorch.from_pretrained load",
    )
    s.add_argument("--overwrite", action="store_true", help="replace an existing Hub folder")
    s.add_argument(
        "--check", action="store_true", help="compare onnxruntime with PyTorch on a sample"
    )
    s.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    s.add_argument(
        "--labels",
        action="store_true",
        help="end the graph in the labels (uint8: the arg-max; binary and multi-label models "
        "thresholded) instead of the logits, for deployment",
    )
    s.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="with --labels: a binary model's foreground threshold (default 0.5)",
    )
    s.add_argument(
        "--int8",
        action="store_true",
        help="quantise the model to int8 for --precision int8 (onnxruntime; written beside the "
        "checkpoint), calibrated on --calib training images of its data set",
    )
    s.add_argument(
        "--calib",
        type=int,
        default=None,
        metavar="N",
        help="with --int8: training images to calibrate on (default 64)",
    )
    s.add_argument(
        "--data",
        default=None,
        help="with --int8: data root (default: the one the model was trained on)",
    )


def _models_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("pattern", nargs="?", default="*", help="e.g. 'smp.Unet*' (default: all)")


def _encoders_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("pattern", nargs="?", default="*", help="e.g. 'resnet*' (default: all)")


#: each command's help line and the function that adds its arguments, in ``--help``'s order
_PARSERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": (
        "synthetic data -> prepare -> train -> evaluate -> predict, in minutes",
        _demo_arguments,
    ),
    "train": ("train from a YAML config with dotted overrides", _train_arguments),
    "stats": (
        "per-channel mean/std of a config's training images; each class's pixel share, "
        "images and weights",
        _stats_arguments,
    ),
    "evaluate": ("score a checkpoint on a split", _evaluate_arguments),
    "score": (
        "score two folders of label PNGs against each other by file name",
        _score_arguments,
    ),
    "predict": (
        "label PNGs (and overlays, RLE) at each input's own resolution",
        _predict_arguments,
    ),
    "prepare": (
        "convert a data set's release into segkit's training layout",
        _prepare_arguments,
    ),
    "synth": ("write a synthetic data set in the real layout", _synth_arguments),
    "export": ("export a checkpoint to ONNX or a Hub folder", _export_arguments),
    "models": ("list architectures (fnmatch pattern)", _models_arguments),
    "encoders": ("list encoders (fnmatch pattern)", _encoders_arguments),
}

#: ``--import``'s settings, given before a command and after it
_IMPORT_OPTION: dict[str, Any] = {
    "action": "append",
    "metavar": "MODULE",
    "dest": "imports",
    "help": "import a plugin module first (registers data sets, models, losses, ...); repeatable",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (each command's arguments: ``_PARSERS``)."""
    p = argparse.ArgumentParser(prog="segkit", description="Semantic segmentation on PyTorch.")
    p.add_argument("--version", action="version", version=f"segkit {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.add_argument("--import", default=[], **_IMPORT_OPTION)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --debug after the command too (segkit train CFG --debug); SUPPRESS keeps the one given
    # before the command when it is not repeated
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks"
    )
    debug.add_argument("--import", default=argparse.SUPPRESS, **_IMPORT_OPTION)
    for name, (help_line, add_arguments) in _PARSERS.items():
        add_arguments(sub.add_parser(name, parents=[debug], help=help_line))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segkit`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "train" and all("=" in e and e[0] != "-" for e in extra):
        args.overrides += extra  # overrides after an option: train CFG --resume a=1 b=2
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    shown = warnings.formatwarning  # warnings as one plain line, not file:line and source
    warnings.formatwarning = lambda message, *_, **__: f"segkit: warning: {message}\n"
    try:
        from segkit.plugins import import_plugins

        with command_line_names():  # messages name --skip-bad, not skip_bad=True
            import_plugins(args.imports, where="--import")
            code = _COMMANDS[args.command](args)
    except (SegkitError, OSError, ValueError, ImportError) as exc:
        if args.debug:
            raise
        message = " ".join(str(exc).split())  # one line, whatever the exception held
        print(
            f"segkit {args.command}: error: {message} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as exc:
        how_far = f": {exc}" if str(exc) else ""
        print(f"segkit {args.command}: interrupted{how_far}", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    finally:
        warnings.formatwarning = shown
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
