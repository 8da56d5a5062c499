"""PyTorch CPU reference for the row LSTM's epoch time (BENCHMARKS.md, Training).

The model of `quench train --zoo lstm`: each 28x28 MNIST image read as 28 steps of 28 pixels,
nn.LSTM(28, 128), the last hidden state, nn.Linear(128, 10). Same data split (data/mnist5k: 4,000
train), batch 64, AdamW (weight decay 1e-4) + one-cycle at LR, no augmentation, THREADS intra-op
threads. Prints one JSON line per epoch with the training time of that epoch (no evaluation inside it).

    ~/.cache/quench/torch-venv/bin/python scripts/train/torch_lstm_epoch.py [EPOCHS] [THREADS] [LR]
"""

import json
import os
import pathlib
import sys
import time

# OpenMP threads that spin while idle cost PyTorch ~9x the CPU on a shared machine (see
# torch_epoch.py); set before torch loads libgomp. OMP_WAIT_POLICY=ACTIVE restores the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "mnist"))
import make_npz  # noqa: E402


class RowLstm(nn.Module):
    def __init__(self, hidden=128):
        super().__init__()
        self.lstm = nn.LSTM(28, hidden)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        seq = x.reshape(-1, 28, 28).transpose(0, 1)  # [28, N, 28]
        _, (h, _) = self.lstm(seq)
        return self.fc(h[0])


def main():
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    pixels, labels = make_npz.load()
    train_idx, test_idx = make_npz.split(labels)
    xtr = torch.from_numpy(make_npz.normalise(pixels[train_idx]))
    ytr = torch.from_numpy(labels[train_idx])
    xte = torch.from_numpy(make_npz.normalise(pixels[test_idx]))
    yte = torch.from_numpy(labels[test_idx])
    model = RowLstm()
    batch = 64
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        secs = time.time() - t0
        model.eval()
        with torch.no_grad():
            acc = sum((model(xte[i:i + 250]).argmax(1) == yte[i:i + 250]).sum().item()
                      for i in range(0, len(xte), 250)) / len(xte)
        print(json.dumps({"model": "lstm", "epoch": epoch + 1, "train_seconds": round(secs, 2),
                          "images_per_s": round(len(xtr) / secs, 1), "loss": round(total / len(xtr), 4),
                          "test_top1": acc, "threads": threads, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
