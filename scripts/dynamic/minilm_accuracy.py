#!/usr/bin/env python3
"""MiniLM (all-MiniLM-L6-v2) sentence embeddings: float vs dynamic int8.

Sentences are real English text from the README/NEWS files under
/usr/share/doc (the first N that pass a plain-prose filter, in sorted file
order, so every run uses the same ones). Embeddings are the model's
`sentence_embedding` output (mean pooled over the attention mask and L2
normalised inside the graph, as sentence-transformers does; checked here
against pooling `last_hidden_state` by hand).

Models compared (all from the same float model):
  quench-*   written by `quench quantize --mode dynamic` (per-channel and
             per-tensor weights; contrib DynamicQuantizeMatMul, ORT-style
             MatMulInteger graph, per-token)
  ort-*      onnxruntime.quantization.quantize_dynamic (per-tensor, per-channel)
Each quantized model is run by ONNX Runtime and, with --quench-run, by
`quench run` too (the numbers must agree).

Usage:
  python scripts/dynamic/minilm_accuracy.py [--quench target/release/quench]
      [--sentences 300] [--quench-run] [--json out.json]
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

CACHE = Path(os.environ.get("QUENCH_CACHE", Path.home() / ".cache/quench"))
MODEL_DIR = CACHE / "models/minilm"
PAIRS = [
    ("The cat sits outside", "The dog plays in the garden", 0.2838),
    ("A man is playing guitar", "A woman watches TV", -0.0327),
    ("The new movie is awesome", "The new movie is so great", 0.8939),
]


def read_text(p: Path) -> str:
    try:
        raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return ""


def sentences(n: int) -> list[str]:
    files = sorted(
        p
        for p in Path("/usr/share/doc").rglob("*")
        if p.is_file() and re.match(r"(README|NEWS|FAQ)", p.name)
    )
    seen, out = set(), []
    for f in files:
        text = re.sub(r"\s+", " ", read_text(f))
        for s in re.split(r"(?<=[.!?])\s+", text):
            s = s.strip()
            words = s.split()
            if not (6 <= len(words) <= 40) or not s[0].isupper() or s[-1] != ".":
                continue
            letters = sum(c.isalpha() or c == " " for c in s)
            if letters < 0.9 * len(s) or re.search(r"[=#*_<>{}\[\]|/\\@]", s):
                continue
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n:
                    return out
    return out


def encode(tok: Tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def batches(tok: Tokenizer, texts: list[str], size: int):
    """Length-sorted batches (little padding); yields (indices, feeds)."""
    order = sorted(range(len(texts)), key=lambda i: len(tok.encode(texts[i]).ids))
    for s in range(0, len(order), size):
        idx = order[s : s + size]
        yield idx, encode(tok, [texts[i] for i in idx])


def embed_ort(model: Path, tok, texts, size=32, check_pooling=False):
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = np.zeros((len(texts), 384), np.float32)
    for idx, feeds in batches(tok, texts, size):
        hidden, emb = sess.run(["last_hidden_state", "sentence_embedding"], feeds)
        if check_pooling:
            m = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            assert np.abs(pooled - emb).max() < 1e-5, "sentence_embedding is not mean+L2"
        out[idx] = emb
    return out


def embed_quench(quench: str, model: Path, tok, texts, size=32):
    out = np.zeros((len(texts), 384), np.float32)
    with tempfile.TemporaryDirectory() as d:
        for idx, feeds in batches(tok, texts, size):
            npz = Path(d) / "in.npz"
            np.savez(npz, **feeds)
            subprocess.run(
                [quench, "run", str(model), "--inputs", str(npz), "-o", d, "--threads", "1"],
                check=True,
                capture_output=True,
            )
            out[idx] = np.load(Path(d) / "sentence_embedding.npy")
    return out


def pair_scores(embed) -> list[float]:
    flat = [s for a, b, _ in PAIRS for s in (a, b)]
    e = embed(flat)
    return [float(e[2 * i] @ e[2 * i + 1]) for i in range(len(PAIRS))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quench", default="target/release/quench")
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--quench-run", action="store_true", help="also run every model with quench run")
    ap.add_argument("--json")
    args = ap.parse_args()

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tok.enable_truncation(128)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    texts = sentences(args.sentences)
    print(f"{len(texts)} sentences from /usr/share/doc, e.g. {texts[0]!r}")
    float_model = MODEL_DIR / "minilm.onnx"
    ref = embed_ort(float_model, tok, texts, check_pooling=True)
    ref_pairs = pair_scores(lambda t: embed_ort(float_model, tok, t))

    work = Path(tempfile.mkdtemp(prefix="minilm-dyn-"))
    models = {}
    # The FFN output projections read GELU outputs (long positive tails): the
    # layers where one per-tensor activation scale loses most.
    import onnx

    fm = onnx.load(str(float_model))
    producer = {o: n for n in fm.graph.node for o in n.output}
    ffn2 = [
        n.name
        for n in fm.graph.node
        if n.op_type == "MatMul" and getattr(producer.get(n.input[0]), "op_type", "") == "Mul"
    ]
    for name, flags in [
        ("quench-per-channel", []),
        ("quench-per-channel-ffn2-float", ["--exclude", ",".join(ffn2)]),
        ("quench-per-tensor", ["--per-tensor"]),
        ("quench-per-channel-onnx", ["--format", "onnx"]),
        ("quench-per-token", ["--per-token"]),
    ]:
        out = work / f"{name}.onnx"
        subprocess.run(
            [args.quench, "quantize", str(float_model), "-o", str(out), "--mode", "dynamic", *flags],
            check=True,
            capture_output=True,
        )
        models[name] = out
    for name, per_channel in [("ort-per-tensor", False), ("ort-per-channel", True)]:
        out = work / f"{name}.onnx"
        quantize_dynamic(
            str(float_model), str(out), per_channel=per_channel, weight_type=QuantType.QInt8
        )
        models[name] = out

    rows = {"float": {"pairs": ref_pairs, "file_mb": float_model.stat().st_size / 1e6}}
    for name, path in models.items():
        runners = [("ort", lambda t, p=path: embed_ort(p, tok, t))]
        if args.quench_run:
            runners.append(("quench", lambda t, p=path: embed_quench(args.quench, p, tok, t)))
        for runner, embed in runners:
            try:
                e = embed(texts)
            except Exception as ex:  # noqa: BLE001 - report and go on
                rows[f"{name} [{runner}]"] = {"error": str(ex)[:200]}
                continue
            cos = (e * ref).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(ref, axis=1)
            rows[f"{name} [{runner}]"] = {
                "cos_mean": float(cos.mean()),
                "cos_min": float(cos.min()),
                "cos_p01": float(np.percentile(cos, 1)),
                "pairs": pair_scores(embed),
                "file_mb": path.stat().st_size / 1e6,
                "emb": e,
            }
    # Same model, two runtimes: how far apart are Quench and ORT?
    for name in models:
        a, b = rows.get(f"{name} [ort]", {}), rows.get(f"{name} [quench]", {})
        if "emb" in a and "emb" in b:
            b["max_abs_vs_ort_run"] = float(np.abs(a["emb"] - b["emb"]).max())

    print(f"\n{'model [runtime]':<40} {'file MB':>8} {'cos mean':>9} {'cos min':>8} {'p01':>7}  pairs (docs: 0.2838, -0.0327, 0.8939)  quench-vs-ort")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<40} ERROR {r['error']}")
            continue
        pairs = " ".join(f"{p:+.4f}" for p in r["pairs"])
        if name == "float":
            print(f"{name:<40} {r['file_mb']:>8.2f} {'':>9} {'':>8} {'':>7}  {pairs}")
            continue
        vs = f"{r['max_abs_vs_ort_run']:.2e}" if "max_abs_vs_ort_run" in r else ""
        print(
            f"{name:<40} {r['file_mb']:>8.2f} {r['cos_mean']:>9.5f} {r['cos_min']:>8.5f} "
            f"{r['cos_p01']:>7.4f}  {pairs}  {vs}"
        )
    print("\nbar: every sentence cos >= 0.99 and each documented pair within 0.02")
    ok = True
    for n, r in rows.items():
        if "cos_min" not in r:
            continue
        meets = r["cos_min"] >= 0.99 and all(abs(p - d) <= 0.02 for p, (_, _, d) in zip(r["pairs"], PAIRS))
        print(f"  {n:<40} {'meets' if meets else 'misses'}")
        if n.startswith("quench-per-token"):
            ok &= meets
    if args.json:
        for r in rows.values():
            r.pop("emb", None)
        Path(args.json).write_text(json.dumps({"sentences": len(texts), "rows": rows}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
