"""Train an LSTM that reads MNIST digits row by row, and export it to ONNX.

The sequence is the 28 image rows (28 pixels each); LSTM(28 -> 128), the last
hidden state, then Linear(128 -> 10). Data and split as scripts/mnist/make_npz.py
(4,000 train images; test.npz's 1,000 images are never trained on), normalised
the same way. Adam, batch 64, fixed seeds, one thread.

Offline only (needs PyTorch):
    ~/.cache/quench/torch-venv/bin/python scripts/dynamic/train_lstm_mnist.py
writes examples/mnist/lstm_rows.onnx (input "input" [batch, 28, 28] float32,
output "logits" [batch, 10]; a plain ONNX LSTM node, layout 0, opset 17).
"""

import pathlib
import sys

import numpy as np
import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "mnist"))
import make_npz  # noqa: E402

EPOCHS = 8


class RowLstm(nn.Module):
    def __init__(self, hidden=128):
        super().__init__()
        self.lstm = nn.LSTM(28, hidden)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):  # x: [batch, 28, 28]
        _, (h, _) = self.lstm(x.transpose(0, 1))
        return self.fc(h[-1])


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    pixels, labels = make_npz.load()
    train_idx, test_idx = make_npz.split(labels)
    norm = lambda p: ((p.astype(np.float32) / 255 - make_npz.MEAN) / make_npz.STD).reshape(-1, 28, 28)
    xtr, ytr = torch.tensor(norm(pixels[train_idx])), torch.tensor(labels[train_idx])
    xte, yte = torch.tensor(norm(pixels[test_idx])), torch.tensor(labels[test_idx])
    model = RowLstm()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    for epoch in range(EPOCHS):
        model.train()
        perm = rng.permutation(len(xtr))
        for s in range(0, len(perm), 64):
            b = perm[s : s + 64]
            loss = nn.functional.cross_entropy(model(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test top-1 {acc:.3f}", flush=True)
    out = ROOT / "examples" / "mnist" / "lstm_rows.onnx"
    torch.onnx.export(
        model,
        (xte[:1],),
        str(out),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
