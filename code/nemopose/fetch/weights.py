"""Pretrained weights in the torch hub cache: torchvision's ImageNet ResNet-50 and its COCO detectors.

:func:`fetch_imagenet_weights` is what training calls, :func:`fetch_detector_weights` what
photos with ``--detect`` need (:mod:`nemopose.photo.detect`): the cached file, or a
hash-checked download through torchvision's weights API (or from a mirror), or an error
that says what to do offline. Both share one path: the file is named after its URL in
``torch.hub.get_dir()/checkpoints`` (moved with TORCH_HOME), and
``torch.hub.load_state_dict_from_url(check_hash=True)`` refuses a file whose sha256 does not
start with the hex after the last ``-`` of its name (nothing is left in the cache then).
:func:`nemopose.train.model.load_resnet50` only reads the cache.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import torch

from ..errors import NemoPoseError, UsageError
from .download import DOWNLOAD_MODES, DownloadError, is_url, mirror_url

# torchvision's ImageNet ResNet-50 (V1, what the original's ``pretrained=True`` loaded).
RESNET50_IMAGENET_FILE = "resnet50-0676ba61.pth"
RESNET50_IMAGENET_URL = f"https://download.pytorch.org/models/{RESNET50_IMAGENET_FILE}"


class PretrainedWeightsMissing(NemoPoseError, FileNotFoundError):
    """ImageNet weights were asked for but are not available offline."""


def imagenet_weights_path() -> Path:
    """Where torchvision caches its ImageNet ResNet-50 (``$TORCH_HOME/hub/checkpoints``)."""
    return hub_checkpoint_path(RESNET50_IMAGENET_URL)


def fetch_imagenet_weights(download: str = "auto", mirror: str | None = None, progress: bool = True) -> Path:
    """The ImageNet ResNet-50 weights in the torch hub cache, downloaded when missing (and
    ``download == "auto"``) through torchvision's weights (``ResNet50_Weights.IMAGENET1K_V1``,
    hash-checked, torch's progress bar) or from ``<mirror>/resnet50-0676ba61.pth``.

    Raises:
        PretrainedWeightsMissing with instructions when they cannot be had.
    """
    return _fetch_hub_weights(RESNET50_IMAGENET_URL, download=download, mirror=mirror, progress=progress,
                              what="ImageNet ResNet-50 weights", missing=PretrainedWeightsMissing,
                              offline_hint="use --pretrained random",
                              failed_hint="start from random weights with --pretrained random")


def imagenet_resnet50(url: str | None = None, progress: bool = True) -> Path:
    """The torchvision ImageNet ResNet-50 weights (``ResNet50_Weights.IMAGENET1K_V1``) on disk.

    Looks in the torch hub cache (``torch.hub.get_dir()/checkpoints``, moved with TORCH_HOME);
    when absent, downloads with ``torch.hub.load_state_dict_from_url(check_hash=True)``, which
    refuses a file whose sha256 does not start with the hex after the last ``-`` of its name.

    Args:
        url: another address for the same file (a mirror); its file name is the cache name.
        progress: show torch's progress bar.

    Returns:
        Path of the cached ``resnet50-0676ba61.pth`` (or ``url``'s file name).

    Raises:
        DownloadError with the URL, where to put the file by hand, and ``--pretrained random``.
    """
    if url is None:
        from torchvision.models import ResNet50_Weights  # a slow import: only when needed

        url = ResNet50_Weights.IMAGENET1K_V1.url
    return _hub_download(url, what="ImageNet ResNet-50 weights", progress=progress,
                         failed_hint="start from random weights with --pretrained random")


# ----------------------------------------------------------------------------- COCO detectors


class DetectorWeightsMissing(NemoPoseError, FileNotFoundError):
    """A COCO detector's weights were asked for but are not available offline."""


def detector_weights_path(name: str = "fasterrcnn_resnet50_fpn_v2") -> Path:
    """Where torchvision caches the COCO weights of detector ``name`` (``$TORCH_HOME/hub/checkpoints``).

    Raises:
        UsageError for a name that is not in :data:`nemopose.photo.detect.DETECTORS`.
    """
    return hub_checkpoint_path(_detector_url(name))


def fetch_detector_weights(name: str = "fasterrcnn_resnet50_fpn_v2", download: str = "auto",
                           mirror: str | None = None, progress: bool = True) -> Path:
    """The COCO weights of torchvision detector ``name`` in the torch hub cache, downloaded
    when missing (and ``download`` is not ``"no"``) from the URL of its torchvision weights
    (``FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1`` for the default; hash-checked, torch's
    progress bar), or from ``<mirror>/<the same file name>``.

    Args:
        name: a key of :data:`nemopose.photo.detect.DETECTORS`.
        download: ``auto`` or ``yes`` fetches missing weights; ``no`` never touches the network.
        mirror: a base URL or a local folder holding the file under its torchvision name
            (e.g. ``fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth``).
        progress: show torch's progress bar.

    Returns:
        Path of the cached file (its name is the URL's: the sha256 prefix after the last ``-``
        was checked when it was downloaded).

    Raises:
        UsageError for an unknown detector name or download mode.
        DetectorWeightsMissing with instructions (the cache path, the URL to put there by hand,
        ``--boxes`` instead of ``--detect``) when the weights cannot be had.
    """
    if download not in DOWNLOAD_MODES:
        raise UsageError(f"download must be one of {', '.join(DOWNLOAD_MODES)}, got {download!r}")
    return _fetch_hub_weights(_detector_url(name), download=download, mirror=mirror, progress=progress,
                              what=f"COCO weights of the {name} detector", missing=DetectorWeightsMissing,
                              offline_hint="give the objects' boxes with --boxes instead of --detect",
                              failed_hint="give the objects' boxes with --boxes instead of --detect")


def _detector_url(name: str) -> str:
    from ..photo.detect import detector_spec  # the registry lives with the detectors (torchvision import)

    return detector_spec(name).weights.url


# ----------------------------------------------------------------------------- the torch hub cache


def hub_checkpoint_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps its file: the URL's file name in
    ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlsplit(url).path)


def _fetch_hub_weights(url: str, *, download: str, mirror: str | None, progress: bool, what: str,
                       missing: type[NemoPoseError], offline_hint: str, failed_hint: str) -> Path:
    """The file of ``url`` in the hub cache; else ``download == "no"`` raises ``missing``, else it
    is downloaded from ``url`` or ``<mirror>/<its file name>`` (:func:`_hub_download`)."""
    path = hub_checkpoint_path(url)
    if path.is_file():
        return path
    if download == "no":
        raise missing(f"{what} not found at {path} and downloading is off; put {url} there, or {offline_hint}")
    source = _openable(mirror_url(mirror, path.name)) if mirror else url
    try:
        return _hub_download(source, what=what, progress=progress, failed_hint=failed_hint)
    except DownloadError as exc:
        raise missing(str(exc)) from exc


def _hub_download(url: str, *, what: str, progress: bool, failed_hint: str) -> Path:
    """``url``'s file in the hub cache, downloaded and hash-checked by torch.hub when absent.

    Raises:
        DownloadError with the URL, where to put the file by hand, and ``failed_hint``; a file
        that failed its check is removed from the cache.
    """
    path = hub_checkpoint_path(url)
    if path.is_file():
        return path
    try:
        torch.hub.load_state_dict_from_url(url, progress=progress, check_hash=True, map_location="cpu")
    except Exception as exc:  # offline, HTTP error, wrong hash, unreadable file: same advice
        if path.exists():  # never leave a file that failed its check where the cache looks
            path.unlink()
        raise DownloadError(
            f"could not get the {what} from {url} ({type(exc).__name__}: {exc}). "
            f"Download that file by hand and put it at {path} (set TORCH_HOME to move the cache), "
            f"or {failed_hint}.") from exc
    if not path.is_file():
        raise DownloadError(f"torch.hub reported success but {path} does not exist; check TORCH_HOME")
    return path


def _openable(source: str) -> str:
    """A :func:`~nemopose.fetch.download.mirror_url` result that urllib can open: a local path
    (a mirror folder) becomes a ``file://`` URL."""
    if is_url(source):
        return source
    return Path(source).resolve().as_uri()
