"""The trained segmentation U-Net and counting CNN as objects, and their model folders.

- :class:`SegmentationModel`: a :class:`~assets_pkg.core.segmentation.unet.UNet` with its
  post-processing (thresholds of
  :func:`~assets_pkg.core.segmentation.classical.instances_from_maps`, training object size).
- :class:`CountingModel`: a :class:`~assets_pkg.core.segmentation.unet.CountingCNN` with its input
  shape and count scale.
- :func:`save_model` / :func:`load_model` write and read either as an
  :mod:`assets_pkg.core.ml.model_folder` (Orbax parameters + ``model.json``), atomically and
  without unpickling anything.

Images are 2-D (height, width) arrays of any integer or float dtype; they are
percentile-normalised (:func:`~assets_pkg.core.segmentation.unet.normalize_image`) before the networks.
The trainers live in :mod:`assets_pkg.core.segmentation.training`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from skimage.segmentation import relabel_sequential as segmentation_relabel

from ..ml import model_folder
from ..ml.model_folder import MODEL_FILE, ModelFileError
from ..ml.provenance import git_commit
from .unet import (
    CountingCNN,
    UNet,
    UNetConfig,
    instances_from_unet_maps,
    normalize_image,
    predict_maps,
)

__all__ = [
    "SegmentationModel",
    "CountingModel",
    "prepare_count_input",
    "save_model",
    "load_model",
    "ModelFileError",
    "MODEL_FILE",
    "KINDS",
]

#: The ``kind`` of the model folders this module reads.
KINDS = ("segmentation", "counting")
#: ``info`` keys that map to their own record sections (the rest go to ``metrics``).
_INFO_SECTIONS = ("train_config", "data", "history")


@dataclass
class SegmentationModel:
    """A trained U-Net with its post-processing.

    Attributes
    ----------
    config : UNetConfig
    params : pytree of jax.Array
    threshold, marker_threshold : float
        Foreground and marker thresholds of
        :func:`~assets_pkg.core.segmentation.unet.instances_from_unet_maps` (the marker threshold
        applies to the centre map when the network predicts one, else to the distance).
    min_area : int
        Smallest object kept, pixels (at the training scale).
    object_diameter_px : float, optional
        Median equivalent diameter of the training objects, pixels; lets :meth:`segment`
        rescale images whose objects are of another size.
    tta : bool
        Average the network's maps over the four flips at inference (test-time augmentation;
        four forward passes).  Models saved before this field read as False.
    info : dict
        Training config, data, history, timings (saved in ``model.json``).
    """

    config: UNetConfig
    params: Any
    threshold: float = 0.5
    marker_threshold: float = 0.5
    min_area: int = 0
    object_diameter_px: float | None = None
    tta: bool = False
    info: dict = field(default_factory=dict)

    kind = "segmentation"

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        """Foreground probability, normalised distance and, when the network predicts it, the
        centre map, each (H, W) float32 (flip-averaged when ``tta``)."""
        return predict_maps(self.params, self.config, image, tta=self.tta)

    def segment(self, image: np.ndarray, object_diameter_px: float | None = None) -> np.ndarray:
        """Instance labels (H, W) int32 of one 2-D image (0 = background).

        Parameters
        ----------
        image : ndarray, shape (H, W)
            Raw intensities, any dtype.
        object_diameter_px : float, optional
            Expected object diameter in this image, pixels.  When it differs from the
            training objects' by more than 10 %, the image is resized to the training scale,
            segmented, and the labels resized back (nearest neighbour).
        """
        scale = 1.0
        if object_diameter_px and self.object_diameter_px:
            scale = self.object_diameter_px / float(object_diameter_px)
        image = np.asarray(image)
        if abs(scale - 1.0) <= 0.1:
            return self._segment(image)
        from skimage.transform import resize

        shape = (max(8, round(image.shape[0] * scale)), max(8, round(image.shape[1] * scale)))
        small = resize(image.astype(np.float32), shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
        labels = self._segment(small)
        back = resize(labels, image.shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
        out, _, _ = segmentation_relabel(back)
        return out

    def _segment(self, image: np.ndarray) -> np.ndarray:
        # Through maps(), so what segments is what tune_postprocessing tuned.
        return instances_from_unet_maps(self.maps(image), self.threshold, self.marker_threshold, self.min_area)

    def count(self, image: np.ndarray) -> int:
        """Number of predicted instances in one image."""
        return int(self.segment(image).max())

    def record(self) -> dict:
        """The ``architecture`` and ``postprocessing`` sections of ``model.json``."""
        return {
            "architecture": {"unet": dataclasses.asdict(self.config)},
            "postprocessing": {
                "threshold": self.threshold,
                "marker_threshold": self.marker_threshold,
                "min_area": self.min_area,
                "object_diameter_px": self.object_diameter_px,
                "tta": self.tta,
            },
        }


@dataclass
class CountingModel:
    """A trained counting CNN.

    Attributes
    ----------
    net : CountingCNN
    params : pytree of jax.Array
    input_shape : (int, int)
        Images are resized to this before the network.
    count_scale : float
        The network predicts ``count / count_scale``.
    info : dict
    """

    net: CountingCNN
    params: Any
    input_shape: tuple[int, int]
    count_scale: float = 1.0
    info: dict = field(default_factory=dict)

    kind = "counting"

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Normalised, resized (H, W) float32 network input of one raw image."""
        return prepare_count_input(image, self.input_shape)

    def predict_batch(self, x: np.ndarray, tta: bool = True) -> np.ndarray:
        """Counts (N,) float32 of prepared inputs (N, H, W).

        With ``tta`` the count is the mean over the four flips the network was trained with.
        """
        out = _count_forward(self.net, self.params, jnp.asarray(x[..., None], jnp.float32), tta)
        return np.asarray(out) * self.count_scale

    def count(self, image: np.ndarray) -> float:
        """Predicted number of cells in one raw 2-D image (not rounded)."""
        return float(self.predict_batch(self.prepare(image)[None])[0])

    def record(self) -> dict:
        """The ``architecture`` section of ``model.json``."""
        return {"architecture": {
            "counting_cnn": {"widths": list(self.net.widths), "dense": self.net.dense,
                             "count_offset": self.net.count_offset, "dtype": self.net.dtype},
            "input_shape": list(self.input_shape),
            "count_scale": self.count_scale,
        }}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _count_forward(net: CountingCNN, params, x, tta: bool = True):
    if not tta:
        return net.apply({"params": params}, x, train=False)
    views = jnp.concatenate([x, x[:, ::-1], x[:, :, ::-1], x[:, ::-1, ::-1]])
    return net.apply({"params": params}, views, train=False).reshape(4, x.shape[0]).mean(axis=0)


def prepare_count_input(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Percentile-normalise a 2-D image and resize it (anti-aliased) to ``shape`` (H, W)."""
    from skimage.transform import resize

    img = normalize_image(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    if img.shape != tuple(shape):
        img = resize(img, shape, order=1, anti_aliasing=True, preserve_range=True)
    return img.astype(np.float32)


# ============================================================================ save / load
def save_model(model: SegmentationModel | CountingModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write a model folder (parameters + ``model.json``) atomically.

    A failure leaves the previous model at ``path`` whole; a folder holding anything but a
    model or a training run's ``checkpoints/`` is refused.

    Parameters
    ----------
    model : SegmentationModel or CountingModel
    path : path-like
        The model folder to create or replace (it may hold the run's ``checkpoints/``).
    extra : dict, optional
        More JSON-able provenance (for example where the data came from).

    Returns
    -------
    Path
        The absolute folder path.
    """
    info = model.info
    record = {
        "kind": model.kind,
        **model.record(),
        "config": info.get("train_config", {}),
        "provenance": {"data": info.get("data"), "git_commit": git_commit(), "jax": jax.__version__, **(extra or {})},
        "history": info.get("history", []),
        "metrics": {k: v for k, v in info.items() if k not in _INFO_SECTIONS},
        "step": info.get("steps_done"),
    }
    return model_folder.save(path, model.params, record)


def load_model(path: str | Path, kind: str | None = None) -> SegmentationModel | CountingModel:
    """Read a model folder written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
    kind : {"segmentation", "counting"}, optional
        Require this kind (a clear error otherwise).

    Raises
    ------
    ModelFileError
        Missing/incomplete folder, other format or kind, or parameters that do not match the
        recorded architecture.
    """
    path = Path(path).resolve()
    record = model_folder.read_record(path, kind or KINDS)
    arch = record["architecture"]
    if record["kind"] == "segmentation":
        cfg = UNetConfig(**arch["unet"])
        net = UNet(cfg)
        dummy = jnp.zeros((1, cfg.multiple, cfg.multiple, cfg.in_channels), jnp.float32)
    else:
        c = arch["counting_cnn"]
        net = CountingCNN(widths=tuple(c["widths"]), dense=int(c["dense"]), count_offset=float(c["count_offset"]),
                          dtype=c["dtype"])
        dummy = jnp.zeros((1, *arch["input_shape"], 1), jnp.float32)
    abstract = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), dummy)["params"])
    params = model_folder.load_params(path, record, abstract)
    info = {"train_config": record["config"], "data": record["provenance"].get("data"), "history": record["history"],
            **record["metrics"]}
    if record["kind"] == "segmentation":
        pp = record["postprocessing"]
        return SegmentationModel(config=cfg, params=params, threshold=float(pp["threshold"]),
                                 marker_threshold=float(pp["marker_threshold"]), min_area=int(pp["min_area"]),
                                 object_diameter_px=pp.get("object_diameter_px"), tta=bool(pp.get("tta", False)),
                                 info=info)
    return CountingModel(net=net, params=params, input_shape=tuple(arch["input_shape"]),
                         count_scale=float(arch["count_scale"]), info=info)
