"""PyTorch CPU reference for `quench train` epoch times (BENCHMARKS.md, Training).

Same models as scripts/mnist/train.py (ResNet-8; MobileNetV2 width 0.5), same data split
(data/mnist5k: 4,000 train), batch 64, AdamW + one-cycle, a random shift of up to 2 pixels per
image, NCHW float32, THREADS intra-op threads (torch.set_num_threads). Prints one JSON line per
epoch with the training time of that epoch (no evaluation inside it).

    ~/.cache/quench/torch-venv/bin/python scripts/train/torch_epoch.py resnet8 [EPOCHS] [THREADS] [SIZE]
    ~/.cache/quench/torch-venv/bin/python scripts/train/torch_epoch.py mobilenetv2_w05 1 2 32
"""

import json
import os
import pathlib
import sys
import time

# Idle OpenMP threads sleep instead of spinning. On a shared, loaded 2-core machine the default
# (spin) made 2-thread PyTorch use 9x the CPU time of 1 thread for the same ResNet-8 steps; set
# before torch loads libgomp. Pass OMP_WAIT_POLICY=ACTIVE to see the default behaviour.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "mnist"))
import make_npz  # noqa: E402
import train as ref  # noqa: E402


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet8"
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 28
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    pixels, labels = make_npz.load()
    train_idx, test_idx = make_npz.split(labels)
    xtr = torch.from_numpy(make_npz.normalise(pixels[train_idx]))
    ytr = torch.from_numpy(labels[train_idx])
    xte = torch.from_numpy(make_npz.normalise(pixels[test_idx]))
    yte = torch.from_numpy(labels[test_idx])
    bg = (0.0 - make_npz.MEAN) / make_npz.STD
    if size != 28:
        p = (size - 28) // 2
        xtr = F.pad(xtr, (p, size - 28 - p, p, size - 28 - p), value=bg)
        xte = F.pad(xte, (p, size - 28 - p, p, size - 28 - p), value=bg)
    model = ref.MODELS[name][0]()
    batch = 64
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            # One random shift per image (as `quench train --crop-pad 2`), not one per batch.
            xp = F.pad(xtr[idx], (2, 2, 2, 2), value=bg)
            dy = torch.randint(0, 5, (len(idx),), generator=gen).tolist()
            dx = torch.randint(0, 5, (len(idx),), generator=gen).tolist()
            xb = torch.stack([xp[j, :, a:a + size, b:b + size] for j, (a, b) in enumerate(zip(dy, dx))])
            loss = F.cross_entropy(model(xb), ytr[idx])
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
        print(json.dumps({"model": name, "epoch": epoch + 1, "train_seconds": round(secs, 2),
                          "images_per_s": round(len(xtr) / secs, 1), "loss": round(total / len(xtr), 4),
                          "test_top1": acc, "threads": threads, "torch": torch.__version__,
                          "omp_wait_policy": os.environ["OMP_WAIT_POLICY"]}), flush=True)


if __name__ == "__main__":
    main()
