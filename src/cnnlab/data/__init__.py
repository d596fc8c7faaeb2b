"""Datasets: a registry of built-in ones, your own image folders, and fast in-memory batches."""

from cnnlab.data.augment import Augment, parse_augment
from cnnlab.data.dataset import ImageData, ImageDataset, take
from cnnlab.data.info import DatasetInfo
from cnnlab.data.loader import BatchLoader
from cnnlab.data.paths import resolve_data_dir
from cnnlab.data.pipeline import Pipeline
from cnnlab.data.registry import get_dataset, get_dataset_info, is_present, list_datasets
from cnnlab.data.scan import listed_once
from cnnlab.data.sources import DatasetNotFoundError

__all__ = [
    "Augment",
    "BatchLoader",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageData",
    "ImageDataset",
    "Pipeline",
    "get_dataset",
    "get_dataset_info",
    "is_present",
    "list_datasets",
    "listed_once",
    "parse_augment",
    "resolve_data_dir",
    "take",
]
