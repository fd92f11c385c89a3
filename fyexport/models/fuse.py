"""Deployment folding (docs/yolov7-architecture.md, 3.1).

* Conv+BN: W' = diag(s) W, b' = s*b + (beta - s*mu), s = gamma / sqrt(var + eps).
* RepConv: BN-fold the 3x3, 1x1 (zero-padded to 3x3) and identity (a centre-tap
  identity kernel) branches and sum them into one biased 3x3 conv.
* IDetect/IAuxDetect -> Detect: W' = m * W, b' = m * (b + W a) for ImplicitA ``a`` and
  ImplicitM ``m``; IAuxDetect keeps only its lead head.

Folding runs in float64 and casts back, so a fused model matches its unfused form
to float32 rounding.
"""
from __future__ import annotations

import torch
from torch import nn


def _bn_scale_shift(bn: nn.BatchNorm2d):
    var = bn.running_var.double()
    s = bn.weight.double() / torch.sqrt(var + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * s
    return s, shift


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new biased Conv2d equal to ``bn(conv(x))`` in eval mode."""
    s, shift = _bn_scale_shift(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    w = conv.weight.double() * s.view(-1, 1, 1, 1)
    b = shift if conv.bias is None else conv.bias.double() * s + shift
    fused.weight.copy_(w.to(conv.weight.dtype))
    fused.bias.copy_(b.to(conv.weight.dtype))
    return fused


def _identity_kernel(channels: int, groups: int, like: torch.Tensor) -> torch.Tensor:
    in_per_group = channels // groups
    k = torch.zeros(channels, in_per_group, 3, 3, dtype=torch.float64, device=like.device)
    for i in range(channels):
        k[i, i % in_per_group, 1, 1] = 1.0
    return k


@torch.no_grad()
def merge_repconv(rep) -> nn.Conv2d:
    """One biased 3x3 conv equal to the three-branch RepConv (before the activation)."""
    dense_conv, dense_bn = rep.rbr_dense[0], rep.rbr_dense[1]
    s, shift = _bn_scale_shift(dense_bn)
    w = dense_conv.weight.double() * s.view(-1, 1, 1, 1)
    b = shift.clone()
    if rep.rbr_1x1 is not None:
        one_conv, one_bn = rep.rbr_1x1[0], rep.rbr_1x1[1]
        s1, shift1 = _bn_scale_shift(one_bn)
        w1 = one_conv.weight.double() * s1.view(-1, 1, 1, 1)
        w = w + nn.functional.pad(w1, [1, 1, 1, 1])
        b = b + shift1
    if rep.rbr_identity is not None:
        si, shifti = _bn_scale_shift(rep.rbr_identity)
        wi = _identity_kernel(dense_conv.in_channels, dense_conv.groups, w) * si.view(-1, 1, 1, 1)
        w = w + wi
        b = b + shifti
    conv = nn.Conv2d(dense_conv.in_channels, dense_conv.out_channels, 3, dense_conv.stride, 1,
                     groups=dense_conv.groups, bias=True).to(dense_conv.weight.device)
    conv.weight.copy_(w.to(dense_conv.weight.dtype))
    conv.bias.copy_(b.to(dense_conv.weight.dtype))
    return conv


@torch.no_grad()
def fold_implicit_conv(conv: nn.Conv2d, ia: torch.Tensor | None, im: torch.Tensor | None) -> nn.Conv2d:
    """A biased 1x1 conv equal to ``im * conv(x + ia)``."""
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if ia is not None:
        b = b + (w.flatten(1) @ ia.double().flatten())
    if im is not None:
        m = im.double().flatten()
        w = w * m.view(-1, 1, 1, 1)
        b = b * m
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=True).to(conv.weight.device)
    out.weight.copy_(w.to(conv.weight.dtype))
    out.bias.copy_(b.to(conv.weight.dtype))
    return out
