"""Write digits.npz's images as PNG files in the image-folder layout (train/<class>/, val/<class>/)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_image_folder(npz: Path, out: Path) -> Path:
    z = np.load(npz)
    for split in ("train", "val"):
        for i, (img, label) in enumerate(zip(z[f"x_{split}"], z[f"y_{split}"])):
            folder = out / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0], mode="L").save(folder / f"{i:05d}.png")
    return out


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/byo_digits_png")
    print(write_image_folder(here / "digits.npz", target))
