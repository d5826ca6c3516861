"""Folding inference-mode batch norm into the convolutions around it (torch.fx).

A BatchNorm2d in eval mode is the per-channel affine map ``y = s * x + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``. It can be
folded into linear layers that produce its input, and then costs nothing:

1. ``conv -> bn`` where the convolution's output feeds only the batch norm: the
   standard conv-bn fold (``torch.fx.experimental.optimization.fuse``).
2. ``(conv_a + conv_b) -> bn`` where both convolutions feed only the sum and the sum
   feeds only the batch norm: ``s`` scales both convolutions' weights and ``t`` becomes
   the bias of one of them. In a pre-activation ResNet this is the BN that opens the
   next block (or the head) after a block with a projection shortcut.

A batch norm that is followed by a non-linearity and only then by a convolution (the
``BN -> ELU -> conv`` order of pre-activation blocks) cannot move past the ELU, and a
batch norm whose input also feeds an identity shortcut would change that shortcut; those
stay. :func:`fold_batchnorm` reports what it folded and what it left.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(
        bn.running_var + bn.eps)
    shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
    return scale, shift


def _scale_conv(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor | None) -> None:
    with torch.no_grad():
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = conv.bias.detach() * scale if conv.bias is not None else torch.zeros_like(scale)
        if shift is not None:
            bias = bias + shift
        if conv.bias is None:
            conv.bias = nn.Parameter(bias)
        else:
            conv.bias.copy_(bias)


def _fold_after_sums(graph_module: fx.GraphModule) -> int:
    """Fold ``bn(conv_a(.) + conv_b(.))`` into the two convolutions; returns how many."""
    modules = dict(graph_module.named_modules())
    folded = 0

    def conv_node(node) -> bool:
        return (isinstance(node, fx.Node) and node.op == "call_module"
                and isinstance(modules.get(node.target), nn.Conv2d) and len(node.users) == 1)

    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0]
        is_add = isinstance(source, fx.Node) and (
            (source.op == "call_function" and source.target in (operator.add, torch.add))
            or (source.op == "call_method" and source.target == "add"))
        if not is_add or len(source.users) != 1 or len(source.args) != 2 or source.kwargs:
            continue
        left, right = source.args
        if not (conv_node(left) and conv_node(right)) or left.target == right.target:
            continue
        bn = modules[node.target]
        scale, shift = _bn_affine(bn)
        _scale_conv(modules[left.target], scale, shift)
        _scale_conv(modules[right.target], scale, None)
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        folded += 1
    graph_module.graph.lint()
    graph_module.recompile()
    return folded


def fold_batchnorm(module: nn.Module) -> tuple[fx.GraphModule, dict]:
    """An eval-mode copy of ``module`` with every foldable batch norm folded (see module doc).

    Returns the new module and a report: batch norms before, folded after a conv, folded
    after a conv+conv sum, and left.
    """
    module = copy.deepcopy(module).eval()
    before = sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())
    fused = fuse(module)  # conv -> bn, symbolic trace inside
    after_conv = before - _graph_batchnorms(fused)
    after_sum = _fold_after_sums(fused)
    fused.delete_all_unused_submodules()
    left = _graph_batchnorms(fused)
    return fused, {"batchnorms": before, "folded_after_conv": after_conv, "folded_after_conv_sum": after_sum,
                   "left": left}


def _graph_batchnorms(graph_module: fx.GraphModule) -> int:
    return sum(1 for node in graph_module.graph.nodes if node.op == "call_module"
               and isinstance(graph_module.get_submodule(node.target), nn.BatchNorm2d))
