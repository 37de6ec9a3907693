"""The ESRGAN generator, :class:`RRDBNet` (Wang et al. 2018), in Real-ESRGAN's key naming.

23 residual-in-residual dense blocks, 64 features, growth 32, two nearest x2 upsamplings,
LeakyReLU 0.2: the Real-ESRGAN x4plus configuration has 16,697,987 parameters. Importing this
module imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ctfp._util import Constraint, Interval, Options, validate_params

__all__ = ["RRDB", "RRDBNet", "ResidualDenseBlock"]


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing the block input and all earlier outputs; the result
    is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, scaled by 0.2, plus the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """The ESRGAN generator (Wang et al. 2018), in Real-ESRGAN's key naming.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Image channels in and out (3 for the published models).
    num_feat : int
        Feature channels (64).
    num_block : int
        RRDB blocks in the trunk (23; the anime model has 6).
    num_grow_ch : int
        Growth channels of the dense blocks (32).
    scale : {4, 2, 1}
        Upscaling factor. The network always upsamples x4; for 2 and 1 the input is first
        pixel-unshuffled (Real-ESRGAN's x2plus convention), so ``conv_first`` takes 4 or 16 times
        ``num_in_ch`` channels.

    The input is ``(N, num_in_ch, H, W)`` in [0, 1]; the output ``(N, num_out_ch, H*scale,
    W*scale)`` is not clamped.
    """

    _parameter_constraints: dict[str, list[Constraint]] = {
        "num_in_ch": [Interval(int, 1, None)],
        "num_out_ch": [Interval(int, 1, None)],
        "num_feat": [Interval(int, 1, None)],
        "num_block": [Interval(int, 1, None)],
        "num_grow_ch": [Interval(int, 1, None)],
        "scale": [Options(1, 2, 4)],
    }

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        params = {
            "scale": scale,
            "num_in_ch": num_in_ch,
            "num_out_ch": num_out_ch,
            "num_feat": num_feat,
            "num_block": num_block,
            "num_grow_ch": num_grow_ch,
        }
        validate_params(params, self._parameter_constraints, "RRDBNet")
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_block = num_block
        self.num_grow_ch = num_grow_ch
        self.scale = scale
        unshuffle = {4: 1, 2: 4, 1: 16}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * unshuffle, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def config(self) -> dict[str, int]:
        """The constructor arguments: ``RRDBNet(**net.config())`` builds the same shape."""
        return {
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_grow_ch": self.num_grow_ch,
            "scale": self.scale,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, self.body)

    def _forward(
        self, x: torch.Tensor, body: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """:meth:`forward` with ``body`` run in place of the trunk ``self.body``: the
        :class:`~ctfp.superres.Upscaler` passes its compiled blocks here (regional compilation:
        the identical RRDBs share one compiled graph, so compiling costs one block, not 23)."""
        if self.scale == 2:
            x = F.pixel_unshuffle(x, 2)
        elif self.scale == 1:
            x = F.pixel_unshuffle(x, 4)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def _conv_names(num_block: int) -> list[str]:
    """The network's convolutions in forward order (the order ncnn files list them in)."""
    names = ["conv_first"]
    for b in range(num_block):
        for r in (1, 2, 3):
            names += [f"body.{b}.rdb{r}.conv{k}" for k in range(1, 6)]
    return names + ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def _conv_has_lrelu(name: str) -> bool:
    """Whether a LeakyReLU(0.2) follows the convolution ``name`` in :meth:`RRDBNet.forward`."""
    return name in ("conv_up1", "conv_up2", "conv_hr") or bool(re.search(r"\.conv[1-4]$", name))
