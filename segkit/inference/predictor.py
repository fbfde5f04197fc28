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

from segkit.data.bands import BandReader
from segkit.data.meta import DatasetMeta
from segkit.data.resize import check_resize_mode, crop_padding, resize_for_model
from segkit.errors import ConfigError, DataError, option
from segkit.inference.inputs import BandFiles, ImageFiles, find_images, normalize
from segkit.inference.options import PredictOptions
from segkit.inference.outputs import ImageWriter, Outputs, check_outputs, encoding, palette
from segkit.inference.probs import (
    predict_proba,
    probs_to_labels,
    probs_to_labels_torch,
    probs_to_masks,
    resize_probs,
)
from segkit.inference.stream import FileStream
from segkit.models.windows import (
    Band,
    Windows,
    assemble,
    at_scale,
    blend_bands,
    channels_last_reader,
    check_tile,
    crop_record,
)

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
    ) -> None:
        self.options = opts = options if options is not None else PredictOptions()
        self.model, train_size = load_model(checkpoint_or_model, device)
        self.spec = spec = self.model.spec
        self.device = next(self.model.parameters()).device
        check_tile(opts.tile, spec.divisor)
        #: a model trained on crops predicts whole images at its training scale in windows of
        #: its crop size, unless a size (a square resize) or another tile is asked for
        record = crop_record(spec)
        if record is not None and opts.tile is None and opts.size is None:
            window = {"tile": int(record["size"]), "overlap": float(record.get("overlap", 0.25))}
            self.options = opts = dataclasses.replace(opts, **window)
        #: the factor each window is resized by for the model (its training scale): a window
        #: of ``tile`` model pixels covers ``tile / scale`` of the image's own
        self.scale = float(record.get("scale", 1.0)) if record is not None and opts.tile else 1.0
        #: how images are run in windows (None: whole)
        self.windows = None
        if opts.tile:
            window = (opts.tile, opts.overlap, opts.blend, opts.batch_size, self.scale)
            self.windows = Windows(*window)
        #: the square size images are resized to; None: as they are (always when tiling)
        self.size = None if opts.tile else (opts.size or train_size)
        #: how images meet that size: training's data.resize (older checkpoints: squash)
        self.resize = check_resize_mode(spec.options.get("resize", "squash"))
        self.mean = spec.mean or (0.0, 0.0, 0.0)
        self.std = spec.std or (1.0, 1.0, 1.0)
        meta = DatasetMeta.from_dict(spec.meta or {})
        #: how training read its images (bands, NaN fill); None: 8-bit RGB
        self.reader = BandReader.from_dict(meta.input)
        if self.reader is None and spec.in_channels != 3:  # a model built outside training
            self.reader = BandReader()
        self.flip_pairs = opts.flip_pairs
        if self.flip_pairs is None:  # what training flipped (recorded in the spec)
            self.flip_pairs = tuple(meta.pairs_for(spec.class_names or []))
        #: a multi-label model's classes (one mask each) and thresholds; None otherwise
        self.multilabel = spec.task == "multilabel"
        self.thresholds = self._thresholds(meta) if self.multilabel else None
        if not self.multilabel and isinstance(opts.threshold, tuple):
            raise ConfigError(
                f"{option('threshold', ','.join(map(str, opts.threshold)))}: one threshold per "
                "class is for multi-label models; this one takes one value (e.g. 0.5)."
            )
        if opts.tta is not None and opts.tta.flip:
            names = spec.class_names or [str(c) for c in range(spec.classes)]
            swapped = ", ".join(f"{names[a]}<->{names[b]}" for a, b in self.flip_pairs)
            logger.info("flip TTA swaps these classes back after mirroring: %s", swapped or "none")

    def _thresholds(self, meta: DatasetMeta) -> tuple[float, ...]:
        """Per-class thresholds: the option's, else what training recorded, else 0.5 each."""
        from segkit.data.meta import check_thresholds

        given, classes = self.options.threshold, self.spec.classes
        if given is None:
            given = meta.thresholds if meta.thresholds is not None else 0.5
        values = (given,) * classes if isinstance(given, float) else tuple(given)
        return check_thresholds(values, classes, option("threshold", given))

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

    def _window_probs(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities of a batch of windows as read (uint8 pixels, or bands): moved to the
        device, normalised, run at the model's scale with test-time augmentation."""
        x = normalize(batch.to(self.device, non_blocking=True), self.mean, self.std)
        tta, pairs = self.options.tta, self.flip_pairs
        return at_scale(lambda b: predict_proba(self.model, b, tta, pairs), x, self.scale)

    def window_bands(self, image: torch.Tensor) -> Iterator[Band]:
        """Finished bands of probabilities of one ``H x W x C`` image run in :attr:`windows`
        (each window batch normalised as it is read: no float copy of the image)."""
        size = tuple(image.shape[:2])
        return blend_bands(self._window_probs, channels_last_reader(image), size, self.windows)

    def batch_probs(self, images: torch.Tensor) -> np.ndarray:
        """``N x C x h x w`` probabilities of an ``N x h x w x 3`` uint8 batch (``N x h x w x
        in_channels`` float32 bands) on the model's device (one image when tiling), at the
        size the batch has."""
        opts = self.options
        if opts.tile:
            return np.stack([self._tiled_probs(image) for image in images])
        x = normalize(images, self.mean, self.std)
        return predict_proba(self.model, x, opts.tta, self.flip_pairs).cpu().numpy()

    def _tiled_probs(self, image: torch.Tensor) -> np.ndarray:
        """``C x H x W`` probabilities of one image in windows, filled band by band (each
        window batch normalised as it is read: no float copy of the image)."""
        return assemble(self.window_bands(image), image.shape[:2], _numpy)

    @property
    def labels_in_windows(self) -> bool:
        """Whether label maps (a multi-label model's masks) are made band by band as windows
        finish (tiling): memory then holds one band of floats, not an image's."""
        return bool(self.options.tile)

    def batch_outputs(self, images: torch.Tensor) -> np.ndarray:
        """What the writers take for a batch: probabilities (resized back and turned into
        labels in the writer threads), or, with :attr:`labels_in_windows`, the finished
        ``N x H x W`` uint8 label maps."""
        if not self.labels_in_windows:
            return self.batch_probs(images)
        opts = self.options
        threshold = 0.5 if opts.threshold is None or self.multilabel else opts.threshold

        def labels(probs: torch.Tensor) -> np.ndarray:
            return _numpy(probs_to_labels_torch(probs, threshold, self.thresholds))

        size = images.shape[1:3]
        return np.stack([assemble(self.window_bands(image), size, labels) for image in images])

    def _array_probs(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        if self.reader is not None and isinstance(image, np.ndarray) and image.ndim in (2, 3):
            where = "the image array"
            bands = self.reader.prepare(image, self.spec.in_channels, where, trained=True)
            return self._resized_probs(bands)
        _check_rgb(image)
        return self._resized_probs(image)

    def _resized_probs(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Probabilities of one checked image, resized for the model as training did, with
        any padding cropped off; and the image's own size."""
        resized = np.ascontiguousarray(resize_for_model(image, self.size, self.resize))
        with self.evaluating():
            probs = self.batch_probs(torch.from_numpy(resized)[None].to(self.device))
        size = image.shape[:2]
        return crop_padding(probs[0], size, self.size, self.resize), size

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
        if self.labels_in_windows and self.reader is None:
            _check_rgb(image)
            with self.evaluating():
                batch = torch.from_numpy(np.ascontiguousarray(image))[None].to(self.device)
                return self.batch_outputs(batch)[0]
        probs, size = self._array_probs(image)
        if self.thresholds is not None:
            return probs_to_masks(probs, size, self.thresholds, self.options.resize_back)
        threshold = 0.5 if self.options.threshold is None else self.options.threshold
        return probs_to_labels(probs, size, threshold, self.options.resize_back)

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
        opts = self.options
        inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        if not inputs:
            raise ValueError("No inputs given; pass image files or folders of images.")
        paths = find_images(inputs)
        classes = tuple(self.spec.class_names or ()) if self.multilabel else None
        if rle_csv is not None and (self.spec.classes > 2 or classes is not None):
            raise ValueError(
                f"An RLE CSV (rle_csv / --rle) holds binary masks, but this model predicts "
                f"{self.spec.classes} classes. Leave it out and use the label PNGs."
            )
        out_dir = Path(out_dir)
        check_outputs(
            paths,
            out_dir,
            opts.overlay,
            opts.save_masks,
            rle_csv,
            opts.overwrite,
            opts.color,
            classes,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        encode = None
        if rle_csv is not None:
            from segkit.data.rle import rle_encode as encode
        writer = ImageWriter(
            out_dir,
            opts,
            max(2, self.spec.classes),
            palette(self.spec),
            encode,
            classes,
            self.thresholds,
            model_size=self.size,
            resize=self.resize,
            reader=self.reader,
            encoding=None if opts.ids or classes is not None else encoding(self.spec),
        )
        if self.reader is None:
            files = ImageFiles(paths, self.size, opts.max_pixels, self.resize)
        else:
            geometry = (opts.max_pixels, self.resize)
            files = BandFiles(paths, self.size, self.reader, self.spec.in_channels, *geometry)
        results = Outputs(rle_csv, out_dir, opts.save_masks, classes)
        stream = FileStream(files, opts, self.batch_outputs, writer, results, self.device)
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
