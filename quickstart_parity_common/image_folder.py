"""A folder of PNG images with an annotations CSV, the layout the tutorial's ``CustomImageDataset`` reads."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_image_folder(images: np.ndarray, labels: np.ndarray, folder: str | Path) -> tuple[Path, Path]:
    """Write ``images`` (N, 28, 28) uint8 as ``img_<i>.png`` and ``annotations.csv`` (file name,
    label); returns (annotations file, image folder)."""
    folder = Path(folder)
    img_dir = folder / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    annotations = folder / "annotations.csv"
    with open(annotations, "w", newline="") as f:
        writer = csv.writer(f)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            name = f"img_{i}.png"
            Image.fromarray(np.asarray(image, np.uint8), mode="L").save(img_dir / name)
            writer.writerow([name, int(label)])
    return annotations, img_dir


def read_annotations(annotations_file: str | Path) -> list[tuple[str, int]]:
    """(file name, label) rows of the CSV."""
    with open(annotations_file, newline="") as f:
        return [(row[0], int(row[1])) for row in csv.reader(f) if row]
