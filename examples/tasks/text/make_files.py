"""Make the text-classification example's files: a small bag-of-embeddings classifier over token ids with an
attention mask — two int64 inputs, ``input_ids`` and ``attention_mask`` (N, 24), as tokenizers hand them to
exported transformers — saved as ``model.onnx``, plus ``data.npz`` holding one array per model input and split
(``x_train/input_ids``, ``x_train/attention_mask``, ``x_val/...``) and class ids.

Sentences are made of a vocabulary of 200 token ids: each of the three classes has its own 20 "topic" words,
mixed with common words and padded (id 0, mask 0) to 24 tokens; the mask marks the real tokens, and the model
averages the embeddings of those only, so padding changes nothing.

    python examples/tasks/text/make_files.py      # from the repository root; a few seconds on a laptop CPU
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
VOCAB, LENGTH, CLASSES, TOPIC = 200, 24, 3, 20


def sentences(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` (ids, mask, class id): int64 ids (N, 24) padded with 0, int64 masks (N, 24) of 1 then 0."""
    y = rng.integers(0, CLASSES, n)
    ids = np.zeros((n, LENGTH), np.int64)
    mask = np.zeros((n, LENGTH), np.int64)
    common = np.arange(1 + CLASSES * TOPIC, VOCAB)
    for i, c in enumerate(y):
        length = int(rng.integers(6, LENGTH + 1))
        topical = rng.random(length) < 0.3
        words = np.where(topical, 1 + c * TOPIC + rng.integers(0, TOPIC, length), rng.choice(common, length))
        ids[i, :length], mask[i, :length] = words, 1
    return ids, mask, y.astype(np.int64)


class BagOfEmbeddings(nn.Module):
    """Embeddings averaged over the masked-in tokens, then a small MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, CLASSES))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(pooled)


def main() -> None:
    rng = np.random.default_rng(0)
    fit = sentences(3000, rng)  # trained on, not saved
    train = sentences(128, rng)  # saved: the int8 calibration batches
    val = sentences(300, rng)
    arrays = {}
    for split, (ids, mask, y) in (("train", train), ("val", val)):
        arrays[f"x_{split}/input_ids"], arrays[f"x_{split}/attention_mask"], arrays[f"y_{split}"] = ids, mask, y
    np.savez_compressed(HERE / "data.npz", **arrays)
    torch.manual_seed(0)
    model = BagOfEmbeddings()
    ids, mask, y = (torch.from_numpy(a) for a in fit)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(8):
        for i in range(0, len(ids), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(ids[i : i + 64], mask[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    model.eval()
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model,
        (ids[:2], mask[:2]),
        str(HERE / "model.onnx"),
        dynamo=True,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_shapes={"input_ids": {0: batch}, "attention_mask": {0: batch}},
        external_data=False,
    )
    with torch.no_grad():
        acc = (model(*(torch.from_numpy(a) for a in val[:2])).argmax(1).numpy() == val[2]).mean()
    print(f"wrote {HERE / 'model.onnx'} and {HERE / 'data.npz'}; validation top-1 {acc:.4f}")


if __name__ == "__main__":
    main()
