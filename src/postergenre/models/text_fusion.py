"""A model that reads the poster's text as well as its pixels.

`TextFusion` wraps an image model (its classifier included) and adds the poster's text as a
second input: the sublinear term frequencies of `postergenre.data.text.TextSpec`, weighted by
the IDF of the training texts and L2-normalised here (TF-IDF), followed by the text's sentence
embedding where the model reads one (already unit length), then a linear map to one logit per
genre, added to the image model's logits. Both parts are linear in their features, so
calibration scales them together (`output_layers`) and the exported graph is one graph with two
inputs. Grad-CAM explains the image part: the text adds a constant to each logit, which changes
the probabilities but not the gradients over the image's feature maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TextFusion(nn.Module):
    """`image(x) + text(tfidf(counts))`: genre logits from pixels and text."""

    def __init__(self, image: nn.Module, buckets: int, sentence_dim: int = 0):
        super().__init__()
        self.image = image
        self.buckets = buckets
        classifier: nn.Linear = image.classifier  # type: ignore[assignment]
        self.text = nn.Linear(buckets + sentence_dim, classifier.out_features, bias=False)
        nn.init.zeros_(self.text.weight)
        self.register_buffer("text_idf", torch.ones(buckets))

    @property
    def classifier(self) -> nn.Linear:
        """The image part's classifier (its bias is the model's only bias)."""
        return self.image.classifier  # type: ignore[return-value]

    def output_layers(self) -> list[nn.Linear]:
        """Every linear layer that adds into the logits (calibration scales them all)."""
        return [self.classifier, self.text]

    def tfidf(self, counts: Tensor) -> Tensor:
        """Sublinear term frequencies (B, buckets) -> L2-normalised TF-IDF."""
        weighted = counts * self.text_idf
        return weighted / weighted.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def text_logits(self, text: Tensor) -> Tensor:
        """The text's share of each genre's logit, from the text input (B, buckets [+ dim])."""
        counts, sentence = text[:, : self.buckets], text[:, self.buckets :]
        return self.text(torch.cat([self.tfidf(counts), sentence], dim=1))

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        return self.image(x) + self.text_logits(text)

    # The image part's interface (Grad-CAM, embeddings): the text is not an image feature.
    def forward_features(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        return self.image.forward_features(x)  # type: ignore[operator]

    def forward_head(self, fmap: Tensor | tuple[Tensor, ...]) -> Tensor:
        return self.image.forward_head(fmap)  # type: ignore[operator]

    def embed(self, x: Tensor) -> Tensor:
        return self.image.embed(x)  # type: ignore[operator]
