"""The :class:`Predictor`: load a model once, then predict files, folders or in-memory images.

Per image: resize to the training size as training did (``data.resize``, recorded in the
spec: squashed, or aspect kept and padded, or aspect kept by the shortest side; a
reduced-size JPEG decode when the model input is much smaller), normalise, pad to the
model's divisor, run the model (in windows with ``tile``, with test-time augmentation with
``tta``), crop the padding away, resize the *probabilities* back to the image's own size
and take the label (:mod:`segkit.inference.probs`). Files are
streamed (:mod:`segkit.inference.stream`); speed against the model alone:
``docs/benchmarks.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.data.resize import crop_padding, resize_for_model
from segkit.errors import DataError
from segkit.inference.inputs import BandFiles, ImageFiles, find_images, normalize
from segkit.inference.options import PredictOptions
from segkit.inference.outputs import ImageWriter, Outputs, check_outputs
from segkit.inference.polygons import (
    PolygonWriter,
    check_polygons,
    coco_annotations,
    labelme_shapes,
)
from segkit.inference.probs import (
    predict_proba,
    probs_to_labels,
    probs_to_labels_torch,
    probs_to_masks,
    resize_probs,
)
from segkit.inference.recipe import Recipe
from segkit.inference.runtimes import make_runtime
from segkit.inference.stream import FileStream
from segkit.models.windows import Band, assemble, at_scale, blend_bands, channels_last_reader

logger = logging.getLogger(__name__)


def load_model(
    checkpoint_or_model: str | Path | torch.nn.Module, device: str = "auto"
) -> tuple[torch.nn.Module, int | None]:
    """The model to predict with (on ``device``) and the square image size it was trained at.

    The size is ``spec.options["image_size"]`` (loading fills it in for older checkpoints,
    from their ``config.data.image_size``); ``None`` when the spec does not say.

    Raises:
        CheckpointError: the checkpoint is missing or unreadable (names the file).
        TypeError: a module without a ``.spec``.
    """
    if isinstance(checkpoint_or_model, torch.nn.Module):
        model = checkpoint_or_model
        if getattr(model, "spec", None) is None:
            raise TypeError(
                f"{type(model).__name__} has no .spec describing its input; build a segkit model "
                "with segkit.models.build_model or pass a checkpoint path."
            )
        if device != "auto":
            model.to(device)
    else:
        from segkit.engine.checkpoint import model_from_checkpoint

        model = model_from_checkpoint(checkpoint_or_model, device=device)
    return model, model.spec.options.get("image_size")


class Predictor:
    """A model loaded once, predicting image files, folders or in-memory RGB arrays.

    Example::

        predictor = Predictor("run/best.pt", PredictOptions(tile=512, tta="flip"))
        labels = predictor.labels(image)             # H x W uint8, image: H x W x 3 uint8 RGB
        probs = predictor.probabilities(image)       # C x H x W float32 at the image's size
        predictor.predict(["photos/"], "predicted")  # <stem>.png label maps (and overlays...)

    Args:
        checkpoint_or_model: a segkit ``best.pt`` / ``last.pt``, or a model with a ``.spec``.
        options: how to predict and what to write (checked when made).
        device: "auto" (CUDA when available, a given model stays where it is), "cpu", ...
        source: the checkpoint a given model was loaded from (where ``runtime="onnxruntime"``
            caches its ONNX export, keyed by the file's content; with it, ``runtime="auto"``
            may choose onnxruntime for a given model too).

    Raises:
        CheckpointError: the checkpoint is missing or unreadable.
        TypeError: a module without a ``.spec``.
        ConfigError: a window smaller than the model's divisor.
    """

    def __init__(
        self,
        checkpoint_or_model: str | Path | torch.nn.Module,
        options: PredictOptions | None = None,
        device: str = "auto",
        *,
        source: str | Path | None = None,
    ) -> None:
        self.options = opts = options if options is not None else PredictOptions()
        self.model, train_size = load_model(checkpoint_or_model, device)
        self.spec = spec = self.model.spec
        self.device = next(self.model.parameters()).device
        if not isinstance(checkpoint_or_model, torch.nn.Module):
            source = checkpoint_or_model
        #: how the model sees images and what its outputs mean, decided once
        self.recipe = recipe = Recipe.make(spec, opts, train_size, self.device, source)
        #: what runs the model (:mod:`segkit.inference.runtimes`): called like it, in its place
        self.runtime = make_runtime(
            self.model, recipe.runtime, recipe.precision, source, fallback=opts.runtime == "auto"
        )
        if self.runtime is self.model and recipe.runtime != "torch":  # auto fell back to torch
            self.recipe = recipe = dataclasses.replace(recipe, runtime="torch", precision="fp32")
        if recipe.tta is not None and recipe.tta.flip:
            names = spec.class_names or [str(c) for c in range(spec.classes)]
            swapped = ", ".join(f"{names[a]}<->{names[b]}" for a, b in recipe.flip_pairs)
            logger.info("flip TTA swaps these classes back after mirroring: %s", swapped or "none")

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The model in eval mode without autograd; its own mode restored afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)

    def model_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``N x C x H x W`` of a normalised batch on the device, with the
        recipe's test-time augmentation (not its windows: see :meth:`window_bands`)."""
        return predict_proba(self.runtime, x, self.recipe.tta, self.recipe.flip_pairs)

    def _window_probs(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities of a batch of windows as read (uint8 pixels, or bands): moved to the
        device, normalised, run at the model's scale with test-time augmentation."""
        recipe = self.recipe
        x = normalize(batch.to(self.device, non_blocking=True), recipe.mean, recipe.std)
        return at_scale(self.model_probs, x, recipe.scale)

    def window_bands(self, image: torch.Tensor) -> Iterator[Band]:
        """Finished bands of probabilities of one ``H x W x C`` image run in the recipe's
        windows (each window batch normalised as it is read: no float copy of the image)."""
        size = tuple(image.shape[:2])
        read = channels_last_reader(image)
        return blend_bands(self._window_probs, read, size, self.recipe.windows)

    def batch_probs(self, images: torch.Tensor) -> np.ndarray:
        """``N x C x h x w`` probabilities of an ``N x h x w x 3`` uint8 batch (``N x h x w x
        in_channels`` float32 bands) on the model's device (one image in windows), at the
        size the batch has."""
        if self.labels_in_windows:
            return np.stack([self._tiled_probs(image) for image in images])
        x = normalize(images, self.recipe.mean, self.recipe.std)
        return self.model_probs(x).cpu().numpy()

    def _tiled_probs(self, image: torch.Tensor) -> np.ndarray:
        """``C x H x W`` probabilities of one image in windows, filled band by band."""
        return assemble(self.window_bands(image), image.shape[:2], _numpy)

    @property
    def labels_in_windows(self) -> bool:
        """Whether label maps (a multi-label model's masks) are made band by band as windows
        finish (in windows): memory then holds one band of floats, not an image's."""
        return self.recipe.windows is not None

    def batch_outputs(self, images: torch.Tensor) -> np.ndarray:
        """What the writers take for a batch: probabilities (resized back and turned into
        labels in the writer threads), or, with :attr:`labels_in_windows`, the finished
        ``N x H x W`` uint8 label maps."""
        if not self.labels_in_windows:
            return self.batch_probs(images)
        recipe = self.recipe

        def labels(probs: torch.Tensor) -> np.ndarray:
            return _numpy(probs_to_labels_torch(probs, recipe.threshold, recipe.thresholds))

        size = images.shape[1:3]
        return np.stack([assemble(self.window_bands(image), size, labels) for image in images])

    def _array_probs(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        reader = self.recipe.reader
        if reader is not None and isinstance(image, np.ndarray) and image.ndim in (2, 3):
            where = "the image array"
            bands = reader.prepare(image, self.spec.in_channels, where, trained=True)
            return self._resized_probs(bands)
        _check_rgb(image)
        return self._resized_probs(image)

    def _resized_probs(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Probabilities of one checked image, resized for the model as training did, with
        any padding cropped off; and the image's own size."""
        size, resize = self.recipe.size, self.recipe.resize
        resized = np.ascontiguousarray(resize_for_model(image, size, resize))
        with self.evaluating():
            probs = self.batch_probs(torch.from_numpy(resized)[None].to(self.device))
        own = image.shape[:2]
        return crop_padding(probs[0], own, size, resize), own

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities ``C x H x W`` (float32) of one ``H x W x 3`` uint8 RGB image, at
        its own size (one channel, the foreground's, for a binary model).

        Raises:
            DataError: not an ``H x W x 3`` uint8 array.
        """
        probs, size = self._array_probs(image)
        return resize_probs(probs, size)

    def labels(self, image: np.ndarray) -> np.ndarray:
        """The ``H x W`` uint8 label map of one ``H x W x 3`` uint8 RGB image (a multi-label
        model: ``C x H x W`` 0/1 masks, one per class).

        Raises:
            DataError: not an ``H x W x 3`` uint8 array.
        """
        recipe = self.recipe
        if self.labels_in_windows and recipe.reader is None:
            _check_rgb(image)
            with self.evaluating():
                batch = torch.from_numpy(np.ascontiguousarray(image))[None].to(self.device)
                return self.batch_outputs(batch)[0]
        probs, size = self._array_probs(image)
        if recipe.thresholds is not None:
            return probs_to_masks(probs, size, recipe.thresholds, self.options.resize_back)
        return probs_to_labels(probs, size, recipe.threshold, self.options.resize_back)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's class names (its class ids as names where training recorded none)."""
        names = [str(n) for n in self.spec.class_names or ()]
        count = len(self.recipe.mask_names or ()) or self.recipe.classes
        return tuple(names + [str(i) for i in range(len(names), count)])

    def polygon_writer(self, out_dir: str | Path) -> PolygonWriter | None:
        """What turns label maps into the polygons the options ask for (None: none)."""
        opts = self.options
        if opts.polygons is None:
            return None
        background = None if self.recipe.multilabel else self.recipe.background
        return PolygonWriter(opts.polygons, Path(out_dir), self.class_names, background,
                             opts.polygon_epsilon, opts.polygon_min_area)  # fmt: skip

    def polygons(self, image: np.ndarray, kind: str | None = None) -> list[dict[str, Any]]:
        """The objects of one ``H x W x 3`` uint8 RGB image as polygons: labelme ``shapes``
        (``kind="labelme"``) or COCO annotations without ids (``"coco"``, ``"coco-rle"``;
        default the options' ``polygons``, else labelme), simplified as the options say
        (:mod:`segkit.inference.polygons`).

        Raises:
            DataError: not an ``H x W x 3`` uint8 array.
            ConfigError: an unknown ``kind``.
        """
        opts = self.options
        kind = kind or opts.polygons or "labelme"
        check_polygons(kind, opts.polygon_epsilon, opts.polygon_min_area)
        labels = self.labels(image)
        background = None if self.recipe.multilabel else self.recipe.background
        shape = (self.class_names, background)
        simplify = (opts.polygon_epsilon, opts.polygon_min_area)
        if kind == "labelme":
            return labelme_shapes(labels, *shape, *simplify)
        return coco_annotations(labels, *shape, kind == "coco-rle", *simplify)

    def predict(
        self,
        inputs: str | Path | Sequence[str | Path],
        out_dir: str | Path,
        rle_csv: str | Path | None = None,
    ) -> dict[str, Any]:
        """Predict image files and folders (not searched recursively) into ``out_dir``.

        Writes ``<stem>.png`` (class ids at each input's own size; a multi-label model
        ``<stem>_<class>.png``, 0/255, one per class) and, as the options ask,
        overlays and colour maps; with ``rle_csv`` a Kaggle ``img,rle_mask`` CSV (binary
        models). Colliding or existing outputs are refused before anything is written.

        Returns:
            ``count`` (images predicted), ``outputs`` (label PNG paths), ``skipped``,
            ``rle_csv``, ``out_dir``, ``seconds`` and ``images_per_s``.

        Raises:
            FileNotFoundError: an input does not exist.
            DataError: an unreadable image (unless ``skip_bad``), colliding or existing outputs.
            ValueError: no inputs, or ``rle_csv`` for a model of more than two classes.
            Interrupted: SIGINT or SIGTERM stopped the run; finished images' outputs are kept,
                the RLE CSV is not written.
        """
        paths, out_dir = self._prepare_outputs(inputs, Path(out_dir), rle_csv)
        opts, recipe = self.options, self.recipe
        encode = None
        if rle_csv is not None:
            from segkit.data.rle import rle_encode as encode
        polygons = self.polygon_writer(out_dir)
        writer = ImageWriter(out_dir, opts, recipe, encode, polygons)
        if recipe.reader is None:
            files = ImageFiles(paths, recipe.size, opts.max_pixels, recipe.resize)
        else:
            geometry = (opts.max_pixels, recipe.resize)
            channels = self.spec.in_channels
            files = BandFiles(paths, recipe.size, recipe.reader, channels, *geometry)
        coco = polygons.start() if polygons is not None else None
        results = Outputs(rle_csv, out_dir, opts.save_masks, recipe.mask_names, coco=coco)
        per_call = 1 if self.labels_in_windows else opts.batch_size  # windows are the batch
        fill = (self.batch_outputs, writer, results, self.device, per_call)
        stream = FileStream(files, opts, *fill)
        start = time.perf_counter()
        with self.evaluating():
            stream.run()
        seconds = time.perf_counter() - start
        if stream.skipped:
            logger.warning(
                "skipped %d unreadable image(s): %s", len(stream.skipped), ", ".join(stream.skipped)
            )
        count = len(paths) - len(stream.skipped)
        return {
            "count": count,
            "outputs": results.outputs,
            "skipped": stream.skipped,
            "rle_csv": str(rle_csv) if rle_csv is not None else None,
            "out_dir": str(out_dir),
            "seconds": seconds,
            "images_per_s": count / seconds if seconds > 0 else 0.0,
        }

    def _prepare_outputs(
        self, inputs: str | Path | Sequence[str | Path], out_dir: Path, rle_csv: Any
    ) -> tuple[list[Path], Path]:
        """The image files to predict, with their outputs checked and ``out_dir`` made."""
        opts, names = self.options, self.recipe.mask_names
        inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        if not inputs:
            raise ValueError("No inputs given; pass image files or folders of images.")
        paths = find_images(inputs)
        if rle_csv is not None and (self.spec.classes > 2 or names is not None):
            raise ValueError(
                f"An RLE CSV (rle_csv / --rle) holds binary masks, but this model predicts "
                f"{self.spec.classes} classes. Leave it out and use the label PNGs."
            )
        kinds = (opts.overlay, opts.save_masks, rle_csv, opts.overwrite, opts.color, names)
        check_outputs(paths, out_dir, *kinds, polygons=self.polygon_writer(out_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        return paths, out_dir


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.cpu().numpy()


def _check_rgb(image: Any) -> None:
    """Refuse anything but an ``H x W x 3`` uint8 RGB array (DataError)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise DataError(
            f"An image to predict must be an H x W x 3 RGB array, got {shape}; "
            "convert it (e.g. cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))."
        )
    if image.dtype != np.uint8:
        raise DataError(
            f"An image to predict must hold uint8 pixels (0..255), got {image.dtype}; "
            "convert it (e.g. np.clip(image * 255, 0, 255).astype(np.uint8) for 0..1)."
        )


def predict(
    checkpoint_or_model: str | Path | torch.nn.Module,
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    rle_csv: str | Path | None = None,
    device: str = "auto",
    **options: Any,
) -> dict[str, Any]:
    """Predict label maps for image files or folders and write them at each input's resolution.

    A one-call :class:`Predictor`: ``options`` are :class:`PredictOptions` fields
    (``batch_size``, ``tta``, ``tile``, ``overlap``, ``size``, ``overlay``, ``overwrite``, ...).
    A model passed in goes back to its device and mode afterwards. Returns and raises what
    :meth:`Predictor.predict` does; an unknown option is a ConfigError naming the closest.
    """
    given = checkpoint_or_model if isinstance(checkpoint_or_model, torch.nn.Module) else None
    home = next(given.parameters()).device if given is not None else None
    predictor = Predictor(checkpoint_or_model, PredictOptions.from_kwargs(**options), device)
    try:
        return predictor.predict(inputs, out_dir, rle_csv)
    finally:
        if home is not None:
            predictor.model.to(home)  # e.g. a model mid-training, on a GPU
