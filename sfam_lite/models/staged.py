"""What the book's two models say about themselves to be explained (read by :class:`sfam_lite.methods.ModelSetup`):
a backbone of four stages, ``layer1`` … ``layer4``, the last of which is explained."""
from __future__ import annotations

from torch import nn

#: the backbone's stages, input side first: the candidate target layers of both models
STAGES = ("layer1", "layer2", "layer3", "layer4")


def stage_index(layer: str) -> int:
    """The position of ``layer`` in :data:`STAGES`; ``ValueError`` naming the choices otherwise."""
    if layer not in STAGES:
        raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(STAGES)}.")
    return STAGES.index(layer)


class Staged:
    """Mixin for a model whose backbone (:meth:`stage_owner`) holds the four stages of :data:`STAGES`."""
    #: the layer whose output is explained: the last stage
    target_stage = "layer4"

    def stage_owner(self) -> nn.Module:
        raise NotImplementedError

    def stages(self) -> dict[str, nn.Module]:
        """The candidate target layers, input side first."""
        owner = self.stage_owner()
        return {name: getattr(owner, name) for name in STAGES}

    @property
    def target_layer(self) -> nn.Module:
        return self.stages()[self.target_stage]

    def stages_after(self, layer: str) -> list[nn.Module]:
        """The stages that follow ``layer``."""
        return list(self.stages().values())[stage_index(layer) + 1:]
