"""Train the small MNIST models in examples/mnist/ and export them to ONNX.

Offline only: needs PyTorch, which neither CI nor the tests need. Separate venv:
    ~/.cache/quench/venv/bin/python -m venv ~/.cache/quench/torch-venv
    ~/.cache/quench/torch-venv/bin/pip install torch numpy onnx onnxscript
    ~/.cache/quench/torch-venv/bin/python scripts/mnist/train.py [bn_cnn resnet8 mobilenetv2_w05]

Data: the 4,000-image train split of data/mnist5k (see make_npz.py), normalised with mean 0.1307,
std 0.3081, augmented with random shifts of up to 2 pixels (zero-pixel padding, then a random
28x28 crop); AdamW (weight decay 1e-4), batch 64, one-cycle learning rate.
Fixed seeds, deterministic algorithms, so a rerun on the same torch build and CPU gives the same
weights. One thread: on the shared 2-core machine (load ~15) two OpenMP threads ran 5-10x slower
than one. Tensors are channels_last while training (1.4x faster for MobileNetV2 here). Test top-1 is measured on test.npz's 1,000 images after the last epoch (no
model selection on test).

Export: torch.onnx.export, opset 17, eval mode, input "input" [batch, 1, 28, 28] float32, output
"logits" [batch, 10], dynamic axis "batch". bn_cnn keeps its BatchNormalization nodes (so a quantizer
must fold them itself); resnet8 and mobilenetv2_w05 are exported the usual way, BN folded into Conv.
"""

import json
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_npz  # noqa: E402  (same data loading, split and normalisation)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "examples" / "mnist"
THREADS = 1
SEED = 0


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class BnCnn(nn.Module):
    """Conv-BN-ReLU x3, each followed by a MaxPool (28 -> 14 -> 7 -> 3), Flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 32), nn.MaxPool2d(2),  # 14x14
            conv_bn(32, 64), nn.MaxPool2d(2),  # 7x7
            conv_bn(64, 64), nn.MaxPool2d(2),  # 3x3
            nn.Flatten(),
        )
        self.fc = nn.Linear(64 * 3 * 3, 10)

    def forward(self, x):
        return self.fc(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.conv2 = conv_bn(cout, cout, act=None)
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, k=1, stride=stride, act=None)
        )

    def forward(self, x):
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet8(nn.Module):
    """CIFAR-style ResNet-8: 3x3 stem, 3 stages of one BasicBlock (16/32/64 channels), GAP, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 16)
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [conv_bn(cin, hidden, k=1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, stride=stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, cout, k=1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width_mult 0.5, ReLU6, 17 inverted residual blocks, last conv
    1280) adapted to 28x28 input: the stride-2 stem is kept but the 2nd and 4th stages are stride
    1, so the feature maps go 28 -> 14 -> 7 -> 4 (3 downsamples instead of 5; 224 -> 7)."""

    # t (expansion), c (channels before width_mult), n (blocks), s (first block's stride)
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 1), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, width_mult=0.5, last_channel=1280):
        super().__init__()
        cin = make_divisible(32 * width_mult)
        layers = [conv_bn(1, cin, stride=2, act=nn.ReLU6)]
        for t, c, n, s in self.SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(conv_bn(cin, last_channel, k=1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channel, 10))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# name -> (constructor, epochs, peak learning rate, keep BatchNormalization in the ONNX graph)
MODELS = {
    "bn_cnn": (BnCnn, 10, 3e-3, True),
    "resnet8": (ResNet8, 10, 3e-3, False),
    "mobilenetv2_w05": (MobileNetV2, 9, 3e-3, False),
}


def shift_augment(x, gen, pad=2):
    """Random translation by up to `pad` pixels; the border is the normalised value of a 0 pixel."""
    background = (0.0 - make_npz.MEAN) / make_npz.STD
    xp = F.pad(x, (pad, pad, pad, pad), value=background)
    n = x.shape[0]
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = xp[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28]
    return out


@torch.no_grad()
def accuracy(model, x, y, batch=250):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


def train(name):
    ctor, epochs, lr, keep_bn = MODELS[name]
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    pixels, labels = make_npz.load()
    train_idx, test_idx = make_npz.split(labels)
    cl = torch.channels_last
    xtr = torch.from_numpy(make_npz.normalise(pixels[train_idx])).to(memory_format=cl)
    ytr = torch.from_numpy(labels[train_idx])
    xte = torch.from_numpy(make_npz.normalise(pixels[test_idx])).to(memory_format=cl)
    yte = torch.from_numpy(labels[test_idx])

    model = ctor().to(memory_format=cl)
    batch = 64
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            xb = shift_augment(xtr[idx], gen).contiguous(memory_format=cl)
            loss = F.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"{name} epoch {epoch + 1}/{epochs} loss {total / len(xtr):.4f} "
              f"test {accuracy(model, xte, yte):.4f} ({time.time() - t0:.0f}s)", flush=True)
    train_s = time.time() - t0
    acc = accuracy(model, xte, yte)

    model.eval().to(memory_format=torch.contiguous_format)
    xte = xte.contiguous()
    path = OUT / f"{name}.onnx"
    torch.onnx.export(
        model, (xte[:1],), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
        do_constant_folding=True,
    )
    params = sum(p.numel() for p in model.parameters())
    info = {"model": name, "params": params, "epochs": epochs, "train_seconds": round(train_s, 1),
            "torch_test_top1": acc, "onnx_bytes": path.stat().st_size, "torch": torch.__version__}
    print(json.dumps(info), flush=True)
    return info


def main():
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    names = sys.argv[1:] or list(MODELS)
    results = [train(n) for n in names]
    log = OUT / "train_log.json"
    old = json.loads(log.read_text()) if log.exists() else {}
    old.update({r["model"]: r for r in results})
    log.write_text(json.dumps(old, indent=2) + "\n")


if __name__ == "__main__":
    main()
