"""Datasets for the training tools: scikit-learn's digits, and every dataset timm's factory reads."""

from ._factory import create_dataset, list_datasets, register_dataset
from .digits import DigitsDataset

__all__ = ["DigitsDataset", "create_dataset", "list_datasets", "register_dataset"]
