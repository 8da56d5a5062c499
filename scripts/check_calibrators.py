#!/usr/bin/env python3
"""Reference ranges and quantization parameters from ONNX Runtime's quantizer.

Writes crates/quench-quant/tests/fixtures/ort_calibration.json, which the
`ort_agreement` test of quench-quant compares Quench's observers against:
- ORT's MinMax, Entropy and Percentile ranges (HistogramCollector from
  onnxruntime.quantization.calibrate, fed numpy arrays directly) for several
  deterministic distributions, both batch by batch ("streaming") and on all
  batches at once ("one_shot", what HistogramCalibrater does for one reader);
- compute_scale_zp for many (min, max) pairs, dtypes and modes;
- quantize_nparray (QuantizeLinear) outputs, and bias quantization.

The data are not stored: both sides regenerate them from a counter-based
splitmix64 (see `uniform`), with Box-Muller / inverse-CDF maths in float64
rounded to float32. The fixture records per-batch min/max/sum so that the
Rust test first checks it regenerated the same values.

Run: ~/.cache/quench/venv/bin/python scripts/check_calibrators.py [out.json]
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto
from onnxruntime.quantization import calibrate
from onnxruntime.quantization.calibrate import HistogramCollector
from onnxruntime.quantization.quant_utils import (
    compute_scale_zp,
    get_qmin_qmax_for_qType,
    quantize_nparray,
)

OUT = Path(__file__).resolve().parent.parent / "crates/quench-quant/tests/fixtures/ort_calibration.json"
BATCHES = 4
BATCH_LEN = 4096
# Per-batch scale multipliers: batches 2 and 4 widen the range, so the
# histograms grow as in a real calibration run.
MULTS = [1.0, 1.3, 0.8, 1.6]


def splitmix64(seed: int, n: int) -> np.ndarray:
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(seed: int, n: int) -> np.ndarray:
    """Exact float64 values in (0, 1): (top 24 bits + 0.5) / 2^24."""
    return ((splitmix64(seed, n) >> np.uint64(40)).astype(np.float64) + 0.5) * 2.0**-24


def gaussian(seed: int, n: int) -> np.ndarray:
    u1, u2 = uniform(seed, n), uniform(seed + 1, n)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def laplace(seed: int, n: int) -> np.ndarray:
    u = uniform(seed, n) - 0.5
    return -np.sign(u) * np.log(1.0 - 2.0 * np.abs(u))


def batch(kind: str, b: int) -> np.ndarray:
    """Batch `b` of distribution `kind`, float32. Mirrored in the Rust test."""
    seed = 1000 * (KINDS.index(kind) + 1) + 10 * b
    m = MULTS[b]
    n = BATCH_LEN
    if kind == "gaussian":
        x = gaussian(seed, n) * m
    elif kind == "laplace":
        x = laplace(seed, n) * 0.5 * m
    elif kind == "relu":
        x = np.maximum(gaussian(seed, n) * 2.0 * m + 0.5, 0.0)
    elif kind == "outliers":
        x = gaussian(seed, n) * 0.3 * m
        # Every 1000th value is an outlier of magnitude 8..20.
        idx = np.arange(0, n, 1000)
        x[idx] = (8.0 + 12.0 * uniform(seed + 2, len(idx))) * np.where(idx % 2000 == 0, 1.0, -1.0)
    elif kind == "lognormal":
        x = np.exp(gaussian(seed, n) * 0.5 * m) - 1.0
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


KINDS = ["gaussian", "laplace", "relu", "outliers", "lognormal"]


def f(x) -> float:
    return float(np.float32(x))


# ORT's KL divergences are computed in float32, so windows whose divergence
# differs by less than float32 noise are a toss-up; the fixture lists every
# candidate within this relative distance of ORT's minimum.
NEAR_TIE = 1e-4


class _CaptureArgmin:
    """Records the array passed to np.argmin inside get_entropy_threshold."""

    def __init__(self):
        self.arrays = []
        self._orig = calibrate.np.argmin

    def __enter__(self):
        def argmin(a, *args, **kwargs):
            self.arrays.append(np.array(a))
            return self._orig(a, *args, **kwargs)

        calibrate.np.argmin = argmin
        return self

    def __exit__(self, *exc):
        calibrate.np.argmin = self._orig


def ort_histogram(method: str, symmetric: bool, num_bins: int, percentile: float, batches) -> tuple:
    """(lo, hi, bins, near-tie candidate indices) from ORT's HistogramCollector
    fed `batches` one per collect()."""
    col = HistogramCollector(
        method=method,
        symmetric=symmetric,
        num_bins=num_bins,
        num_quantized_bins=128,
        percentile=percentile,
        scenario="same",
    )
    with contextlib.redirect_stdout(io.StringIO()), _CaptureArgmin() as cap:
        for x in batches:
            col.collect({"t": x})
        res = col.compute_collection_result()["t"]
    hist = col.get_histogram_dict()["t"]
    ties = []
    if method == "entropy":
        kl = cap.arrays[-1]
        ties = [int(i) for i in np.nonzero(kl <= kl.min() * (1 + NEAR_TIE))[0]]
    return f(res[0]), f(res[1]), int(len(hist[0])), ties


def calibration_cases() -> list:
    cases = []
    for kind in KINDS:
        bs = [batch(kind, b) for b in range(BATCHES)]
        allx = np.concatenate(bs)
        case = {
            "kind": kind,
            "batches": [{"min": f(x.min()), "max": f(x.max()), "sum": float(x.astype(np.float64).sum())} for x in bs],
            "minmax": [f(allx.min()), f(allx.max())],
            "results": [],
        }
        configs = [
            ("entropy", False, 2048, 99.999),
            ("entropy", False, 512, 99.999),
            ("percentile", True, 2048, 99.999),
            ("percentile", True, 2048, 99.9),
            ("percentile", False, 2048, 99.999),
            ("percentile", False, 2048, 99.9),
        ]
        for method, symmetric, num_bins, pct in configs:
            for mode, feed in (("streaming", bs), ("one_shot", [allx])):
                lo, hi, bins, ties = ort_histogram(method, symmetric, num_bins, pct, feed)
                case["results"].append(
                    {
                        "method": method,
                        "symmetric": symmetric,
                        "num_bins": num_bins,
                        "percentile": pct,
                        "feed": mode,
                        "range": [lo, hi],
                        "ort_bins": bins,
                        "near_ties": ties,
                    }
                )
        cases.append(case)
    return cases


QTYPES = {"u8": TensorProto.UINT8, "i8": TensorProto.INT8}


def qparam_pairs() -> list:
    u = uniform(77, 400)
    pairs = [(0.0, 0.0), (1.0, 1.0), (-1.0, -1.0), (0.0, 1.0), (-1.0, 0.0), (-1.0, 3.0), (2.0, 4.0), (-4.0, -2.0)]
    pairs += [(-1e-39, 1e-39), (-1e-30, 2e-30), (-0.5, 0.5), (-127.0, 127.0), (-128.0, 127.0), (0.0, 255.0)]
    for k in range(0, 400, 4):
        mag_lo = 10.0 ** (-6 + 9 * u[k])
        mag_hi = 10.0 ** (-6 + 9 * u[k + 1])
        sel = int(u[k + 2] * 4)
        lo, hi = -mag_lo, mag_hi
        if sel == 1:
            lo = mag_lo * u[k + 3]  # positive-only
            hi = lo + mag_hi
        elif sel == 2:
            hi = -mag_hi * u[k + 3]  # negative-only
            lo = hi - mag_lo
        pairs.append((f(lo), f(hi)))
    return pairs


def qparam_cases() -> list:
    out = []
    pairs = qparam_pairs()
    configs = [
        (dt, sym, rr, None) for dt in ("u8", "i8") for sym in (False, True) for rr in (False, True)
    ] + [("u8", False, False, 1e-4), ("i8", True, False, 1e-4)]
    for dt, sym, rr, mrr in configs:
        qmin, qmax = get_qmin_qmax_for_qType(QTYPES[dt], reduce_range=rr, symmetric=sym)
        res = []
        for lo, hi in pairs:
            zp, scale = compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax, sym, mrr)
            res.append([int(zp), float(np.float32(scale))])
        out.append(
            {
                "dtype": dt,
                "symmetric": sym,
                "reduce_range": rr,
                "min_real_range": mrr,
                "qmin": int(qmin),
                "qmax": int(qmax),
                "results": res,
            }
        )
    return [{"pairs": [[lo, hi] for lo, hi in pairs], "configs": out}]


def quantize_cases() -> list:
    out = []
    scale = np.float32(0.05)
    x = np.concatenate(
        [
            (np.arange(-300, 301, dtype=np.float32) * np.float32(0.025)),  # many exact ties
            (gaussian(5, 200) * 4.0).astype(np.float32),
            np.array([1e6, -1e6, 0.0, -0.0], dtype=np.float32),
        ]
    )
    for dt, zp in (("u8", 128), ("u8", 3), ("i8", 0), ("i8", -7)):
        zpa = np.array(zp, dtype=np.uint8 if dt == "u8" else np.int8)
        q = quantize_nparray(QTYPES[dt], x, scale, zpa)
        out.append({"dtype": dt, "scale": f(scale), "zero_point": zp, "q": [int(v) for v in q]})
    return [{"x": [f(v) for v in x], "cases": out}]


def bias_cases() -> dict:
    bias = (gaussian(9, 16) * 3.0).astype(np.float32)
    in_scale = np.float32(0.0123)
    w_scales = (uniform(11, 16) * 0.01 + 1e-4).astype(np.float32)
    # ORT's quantize_bias_static_impl.
    bias_scale = in_scale * w_scales
    q = np.asarray(bias, dtype=np.float64) / np.asarray(bias_scale, dtype=np.float64)
    q = np.clip(q.round(), np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    return {
        "bias": [f(v) for v in bias],
        "input_scale": f(in_scale),
        "weight_scales": [f(v) for v in w_scales],
        "scales": [f(v) for v in bias_scale],
        "q": [int(v) for v in q],
    }


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    import onnxruntime

    doc = {
        "generator": "scripts/check_calibrators.py",
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "batches": BATCHES,
        "batch_len": BATCH_LEN,
        "mults": MULTS,
        "calibration": calibration_cases(),
        "qparams": qparam_cases()[0],
        "quantize": quantize_cases()[0],
        "bias": bias_cases(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
