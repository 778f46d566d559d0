"""NeMo's feature extractor (METHOD.md §7): an image -> a dense, L2-normalised 128-d map at stride 8.

Two backbones share one output contract (``out_channels`` features at stride 8, then a linear
head to ``d_feature`` and L2 normalisation):

- ``resnetext`` (the default, the original's): ResNet-50 up to layer4, decoded back to stride 8
  by ``DoubleConv(2048 -> 1024)`` on layer4, ``Up(2048, 1024, 512)`` merging layer3 and
  ``Up(1024, 512, 256)`` merging layer2.
- ``light``: a narrow U-Net of the same shape (five stride-2 stages, decoded to stride 8 with
  the same ``Up`` blocks), about 1/40 of ResNet-50's cost. For CPU demos on the synthetic
  data only; never the default.

The network has two forward modes (one ``forward`` so that DistributedDataParallel sees both):

- training, ``model(images, vertex_index, clutter_index)``: the stride-8 features at the cells
  of the vertices and of ``num_noise`` clutter cells per image, through the head (with its
  bias) and normalised -> ``(B, nV + num_noise, d)``;
- test, ``model(images)``: the whole map ``(B, d, H/8, W/8)``. Quirk of the original: at test
  time only the head's weight is applied (a 1x1 convolution without the bias). Kept as the
  default; ``test_head_bias=True`` applies the bias as in training.

Original checkpoints (``module.net.extractor.*`` ...) are translated by
:func:`from_original_state_dict`; our own names are more descriptive (see ``ORIGINAL_PREFIXES``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .. import constants
from ..fetch.weights import RESNET50_IMAGENET_URL, PretrainedWeightsMissing, imagenet_weights_path

log = logging.getLogger(__name__)

STRIDE = constants.DOWNSAMPLE_RATE
BACKBONES = ("resnetext", "light")

# ----------------------------------------------------------------------------- blocks


class DoubleConv(nn.Module):
    """(3x3 conv with bias, BN, ReLU) x 2, padding 1: ``in -> mid -> out`` channels.
    (``norm='group'`` swaps BN for GroupNorm; used by the light backbone only.)"""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None,
                 norm: str = "batch"):
        super().__init__()
        mid_channels = mid_channels or out_channels
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1),
            _norm(norm, mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Up(nn.Module):
    """Upsample the coarse input x2 (bilinear, align_corners=True), pad/crop it to the skip's
    size, concatenate ``[skip, upsampled]`` and apply a DoubleConv(in -> mid -> out)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, norm: str = "batch"):
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels, mid_channels, norm)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[2] - up.shape[2], skip.shape[3] - up.shape[3]
        # Negative differences crop (sizes that are multiples of 8 but not of 32).
        up = F.pad(up, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, up], dim=1))


# ----------------------------------------------------------------------------- backbones


class ResNetExt(nn.Module):
    """ResNet-50 trunk decoded back to stride 8 (the original ``resnetext``).

    Input ``(B, 3, H, W)``, output ``(B, 256, ceil(H/8), ceil(W/8))``.
    """

    out_channels = 256

    def __init__(self, resnet: torchvision.models.ResNet | None = None):
        super().__init__()
        net = resnet if resnet is not None else torchvision.models.resnet50(weights=None)
        # Indices 0..5 as in the original's Sequential (2 = ReLU, 3 = max-pool).
        self.stride8 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
        self.layer3 = net.layer3          # stride 16, 1024 channels
        self.layer4 = net.layer4          # stride 32, 2048 channels
        self.bottleneck = DoubleConv(2048, 1024)
        self.up3 = Up(2048, 1024, 512)    # merges layer3
        self.up2 = Up(1024, 512, 256)     # merges layer2 (stride 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x8 = self.stride8(x)
        x16 = self.layer3(x8)
        x32 = self.layer4(x16)
        return self.up2(self.up3(self.bottleneck(x32), x16), x8)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 16), channels)   # groups of 16 channels
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


def _conv_norm_relu(cin: int, cout: int, stride: int = 1, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         _norm(norm, cout), nn.ReLU(inplace=True))


class LightBackbone(nn.Module):
    """A narrow U-Net for CPU demos: five stride-2 stages (two 3x3 convs each) to stride 32,
    decoded to stride 8 with the ``Up`` blocks of ``resnetext``.

    Input ``(B, 3, H, W)``, output ``(B, widths[2] * 2, ceil(H/8), ceil(W/8))``.
    ``norm='group'`` (GroupNorm, groups of 16 channels) makes every image's features
    independent of its batch (exact distributed equivalence in tests); BN (the default) learns
    faster on the demo data.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128, 256), norm: str = "batch"):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"light backbone needs 5 stage widths, got {widths}")
        stages, cin = [], 3
        for w in widths:
            stages.append(nn.Sequential(_conv_norm_relu(cin, w, 2, norm), _conv_norm_relu(w, w, 1, norm)))
            cin = w
        self.stages = nn.ModuleList(stages)
        w8, w16, w32 = widths[2], widths[3], widths[4]
        self.up16 = Up(w32 + w16, w16, w16, norm)
        self.out_channels = 2 * w8
        self.up8 = Up(w16 + w8, self.out_channels, self.out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return self.up8(self.up16(feats[4], feats[3]), feats[2])


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, device: torch.device | str = "cpu") -> int:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``batches``
    (images ``(B, 3, H, W)``) with the current weights ("precise BN").

    After short or fast-moving training the exponential running averages lag the weights, so
    test-time (eval mode) features differ from the training-time ones. Returns the number of
    BatchNorm layers; the model is left in the mode it was in.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                     # cumulative average over the batches
    model.train()
    for images in batches:
        model(images.to(device))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.train(was_training)
    return len(norms)


# ----------------------------------------------------------------------------- pixel indices


def vertex_cell_index(vertex_pixels: torch.Tensor, image_size: tuple[int, int],
                      stride: int = STRIDE) -> torch.Tensor:
    """Flat index of the stride-``stride`` cell of each vertex pixel.

    Args:
        vertex_pixels: ``(B, nV, 2)`` pixel (row, col) in the image, inside it.
        image_size: (H, W) of the network input.
    Returns:
        ``(B, nV)`` long, ``(row // stride) * (W // stride) + col // stride``.
    """
    if vertex_pixels.dim() != 3 or vertex_pixels.shape[-1] != 2:
        raise ValueError(f"vertex_pixels must be (B, nV, 2), got {tuple(vertex_pixels.shape)}")
    line = image_size[1] // stride
    cells = torch.div(vertex_pixels, stride, rounding_mode="floor").long()
    return cells[..., 0] * line + cells[..., 1]


def sample_clutter_index(vertex_index: torch.Tensor, num_cells: int, num_noise: int,
                         generator: torch.Generator | None = None,
                         seeds: list[int] | None = None) -> torch.Tensor:
    """Clutter cells: ``num_noise`` per image, uniformly without replacement among the cells
    that hold no vertex. Faithful default: drawn over the whole map (the original's
    ``noise_on_mask=False``), not only the background.

    Args:
        vertex_index: ``(B, nV)`` long cell indices of the vertices (all of them, visible or not).
        num_cells: h * w of the feature map.
        generator: used for the whole batch (CPU), or
        seeds: one seed per image, each drawn with its own generator, so that a sample's
            clutter cells do not depend on its batch or rank (reproducible DDP and resume).
    Returns:
        ``(B, num_noise)`` long cell indices, on ``vertex_index``'s device.
    """
    batch = vertex_index.shape[0]
    mask = torch.ones(batch, num_cells, dtype=torch.float32)
    mask.scatter_(1, vertex_index.detach().cpu().long(), 0.0)
    if (mask.sum(1) < num_noise).any():
        raise ValueError(f"fewer than {num_noise} cells free of vertices in a {num_cells}-cell map")
    if seeds is None:
        out = torch.multinomial(mask, num_noise, replacement=False, generator=generator)
    else:
        if len(seeds) != batch:
            raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}")
        out = torch.stack([torch.multinomial(mask[i], num_noise, replacement=False,
                                             generator=torch.Generator().manual_seed(int(s)))
                           for i, s in enumerate(seeds)])
    return out.to(vertex_index.device)


# ----------------------------------------------------------------------------- the network


class NeMoNet(nn.Module):
    """Backbone + linear head + L2 normalisation.

    Args:
        backbone: 'resnetext' (faithful) or 'light' (CPU demos).
        d_feature: output feature dimension (128).
        pretrained: for resnetext, 'imagenet' (torchvision's ResNet-50 from the local torch
            cache), 'random', or a path to a ResNet-50 state dict. 'light' is always random.
        test_head_bias: apply the head's bias in the test forward (the original does not).
        light_widths, light_norm: stage widths and normalisation ('batch' | 'group') of the
            light backbone.
    """

    def __init__(self, backbone: str = "resnetext", d_feature: int = 128, pretrained: str = "imagenet",
                 test_head_bias: bool = False, light_widths: tuple[int, ...] = (16, 32, 64, 128, 256),
                 light_norm: str = "batch"):
        super().__init__()
        if backbone == "resnetext":
            self.backbone = ResNetExt(load_resnet50(pretrained))
        elif backbone == "light":
            if pretrained not in ("random", "", None):
                raise ValueError("the light backbone has no pretrained weights; use pretrained='random'")
            self.backbone = LightBackbone(tuple(light_widths), light_norm)
        else:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")
        self.backbone_name = backbone
        self.d_feature = d_feature
        self.test_head_bias = test_head_bias
        self.head = nn.Linear(self.backbone.out_channels, d_feature)

    def forward(self, images: torch.Tensor, vertex_index: torch.Tensor | None = None,
                clutter_index: torch.Tensor | None = None) -> torch.Tensor:
        """Training features when ``vertex_index`` is given, else the test-time map.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised, H and W multiples of 8.
            vertex_index: ``(B, nV)`` long cell indices (:func:`vertex_cell_index`).
            clutter_index: ``(B, n_noise)`` long cell indices (:func:`sample_clutter_index`).
        Returns:
            ``(B, nV + n_noise, d)`` unit vectors (training) or ``(B, d, H/8, W/8)`` (test).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        fmap = self.backbone(images)                       # (B, C, h, w)
        if vertex_index is None:
            return self._head_map(fmap)
        index = vertex_index if clutter_index is None else torch.cat([vertex_index, clutter_index], dim=1)
        b, c = fmap.shape[:2]
        flat = fmap.flatten(2).transpose(1, 2)             # (B, h*w, C)
        if int(index.max()) >= flat.shape[1] or int(index.min()) < 0:
            raise ValueError(f"cell index out of range for a {tuple(fmap.shape[2:])} feature map")
        picked = torch.gather(flat, 1, index.unsqueeze(-1).expand(-1, -1, c))   # (B, K, C)
        # The head and the normalisation run in float32 even when the backbone runs under
        # autocast (bf16 training, nemopose.train.precision): the features are compared with the bank
        # at temperature 0.07, where bf16 rounding would be visible. A tiny share of the work.
        with torch.autocast(picked.device.type, enabled=False):
            return F.normalize(self.head(picked.float()), p=2, dim=2)

    def _head_map(self, fmap: torch.Tensor) -> torch.Tensor:
        # float32 head and normalisation, as in the training forward
        weight = self.head.weight[:, :, None, None]        # (d, C, 1, 1)
        bias = self.head.bias if self.test_head_bias else None
        with torch.autocast(fmap.device.type, enabled=False):
            return F.normalize(F.conv2d(fmap.float(), weight, bias), p=2, dim=1)


# ----------------------------------------------------------------------------- pretrained weights


def load_resnet50(pretrained: str | os.PathLike | None) -> torchvision.models.ResNet:
    """A torchvision ResNet-50, with ImageNet weights unless ``pretrained == 'random'``.

    Does not download: 'imagenet' reads the local torch cache (:func:`nemopose.fetch.weights.fetch_imagenet_weights`
    fills it); a path reads that file.

    Raises:
        PretrainedWeightsMissing with instructions when the weights are not available.
    """
    net = torchvision.models.resnet50(weights=None)
    if pretrained in ("random", "", None):
        return net
    path = imagenet_weights_path() if str(pretrained) == "imagenet" else Path(pretrained)
    if not path.is_file():
        raise PretrainedWeightsMissing(
            f"ImageNet ResNet-50 weights not found at {path}. Either download {RESNET50_IMAGENET_URL} "
            f"to {imagenet_weights_path()} (or anywhere and pass --pretrained PATH), or train from "
            "random initialisation with --pretrained random (the synthetic demo does).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or [k for k in unexpected if not k.startswith("fc.")]:
        raise ValueError(f"{path}: not a ResNet-50 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
    log.info("ResNet-50 ImageNet weights loaded from %s", path)
    return net


# ----------------------------------------------------------------------------- original checkpoints

# Original (DataParallel-wrapped NetE2E) key prefix -> ours, for resnetext.
ORIGINAL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("net.extractor.", "backbone.stride8."),
    ("net.extractor1.", "backbone.layer3."),
    ("net.extractor2.", "backbone.layer4."),
    ("net.upsample0.doubleconv.", "backbone.bottleneck.block."),
    ("net.upsample1.doubleconv.doubleconv.", "backbone.up3.conv.block."),
    ("net.upsample2.doubleconv.doubleconv.", "backbone.up2.conv.block."),
    ("out_layer.", "head."),
)


def is_original_state_dict(state: dict) -> bool:
    return any(k.startswith(("module.net.", "net.")) for k in state)


def from_original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original NeMo ``resnetext`` state dict (with or without DataParallel's
    ``module.`` prefix) to our module names.

    Raises:
        ValueError naming the first key that belongs to no known part.
    """
    out = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        for old, new in ORIGINAL_PREFIXES:
            if name.startswith(old):
                out[new + name[len(old):]] = value
                break
        else:
            raise ValueError(f"original checkpoint key {key!r} belongs to no known part of resnetext")
    return out


def to_original_state_dict(state: dict[str, torch.Tensor], data_parallel: bool = True) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_original_state_dict` (for exporting to the original code)."""
    out = {}
    prefix = "module." if data_parallel else ""
    for key, value in state.items():
        for old, new in ORIGINAL_PREFIXES:
            if key.startswith(new):
                out[prefix + old + key[len(new):]] = value
                break
        else:
            raise ValueError(f"key {key!r} has no original name (only resnetext can be exported)")
    return out
