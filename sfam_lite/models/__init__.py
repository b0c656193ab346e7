"""The two metric learners the paper explains: FRN (few-shot, Euclidean) and GPW / MS loss (retrieval, cosine)."""
from .frn import FRN, ResNet12, reconstruction_distance
from .gpw import GPWEmbedding, multi_similarity_loss

__all__ = ["FRN", "ResNet12", "reconstruction_distance", "GPWEmbedding", "multi_similarity_loss"]
