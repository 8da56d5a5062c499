"""Write realistic inputs for the real models fetched by fetch-models.sh, and onnxruntime reference outputs.

Usage: python make_real_inputs.py [MODELS_DIR] [--out DIR] [--image PNG/JPEG]
  MODELS_DIR defaults to $QUENCH_CACHE/models, DIR to $QUENCH_CACHE/inputs.
Writes DIR/<name>.npz (arrays keyed by model input name), DIR/<name>.ref.npz (keyed by output name) and
DIR/manifest.tsv (name, model path relative to MODELS_DIR, input file). Deterministic for a given image.
  rapidocr_det  page image as rapidocr feeds it (BGR, (x/255-mean)/std from config.yaml, sides rounded to 32);
                the image is cropped to at most --det-crop HxW first to keep the input moderate
  rapidocr_rec  the largest text line found in the det output, resized to 48 high, zero-padded to 320 (1x3x48x320)
  rapidocr_cls  the same line for the direction classifier (1x3x48x192)
  silero_*      a 512-sample 16 kHz chunk of synthetic voiced speech, with the 64-sample context the models expect
                prepended, and the LSTM state after running the preceding chunks (not zeros)
  magika        byte features (beg/end 1024 bytes each, whitespace-stripped, padded with 256) of a few real files
  minilm        BERT WordPiece ids of one sentence, [CLS] ... [SEP], int64 [1, seq]
"""
import argparse, glob, json, math, os, re, sys, unicodedata
import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

CACHE = os.environ.get("QUENCH_CACHE", os.path.expanduser("~/.cache/quench"))
ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("models", nargs="?", default=os.path.join(CACHE, "models"))
ap.add_argument("--out", default=os.path.join(CACHE, "inputs"))
ap.add_argument("--image", help="page image with text for rapidocr (default: a Rust book screenshot if installed)")
ap.add_argument("--det-crop", default="736x1280", help="max HxW of the det input region (0 = whole image)")
args = ap.parse_args()
M, OUT = args.models, args.out
if not os.path.isdir(M):
    sys.exit(f"error: models dir {M} missing; run scripts/fetch-models.sh first")
os.makedirs(OUT, exist_ok=True)
ort.set_default_logger_severity(3)
manifest = []


def session(rel):
    path = os.path.join(M, rel)
    if not os.path.exists(path):
        sys.exit(f"error: {path} missing; run scripts/fetch-models.sh first")
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def save(name, rel, feeds, sess=None):
    sess = sess or session(rel)
    outs = sess.run(None, feeds)
    np.savez(os.path.join(OUT, f"{name}.npz"), **feeds)
    ref = {o.name: v for o, v in zip(sess.get_outputs(), outs)}
    np.savez(os.path.join(OUT, f"{name}.ref.npz"), **ref)
    manifest.append((name, rel))
    desc = lambda d: ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in d.items())
    print(f"{name}: in {desc(feeds)} -> out {desc(ref)}", file=sys.stderr)
    return ref


# ---------------------------------------------------------------- rapidocr
def config_yaml(path):
    """The few scalars/lists we need from rapidocr's config.yaml, as {section: {key: value}} (no PyYAML)."""
    cfg, sec = {}, None
    for line in open(path):
        if re.match(r"^\w+:\s*$", line):
            sec = cfg.setdefault(line.split(":")[0], {})
        elif (m := re.match(r"^\s+(\w+):\s*(\[.*\]|[-\w.]+)\s*$", line)) and sec is not None:
            v = m.group(2)
            sec[m.group(1)] = json.loads(v.replace("'", '"')) if v.startswith("[") else v
    return cfg


def find_image():
    if args.image:
        return args.image
    pats = ["~/.rustup/toolchains/*/share/doc/rust/html/book/img/trpl14-01.png",
            "/usr/share/doc/*/html/*.png", "/usr/share/doc/**/*.png"]
    for p in pats:
        hits = [h for h in sorted(glob.glob(os.path.expanduser(p), recursive=True)) if os.path.getsize(h) > 20_000]
        if hits:
            return hits[0]
    return None


def synthetic_page(h=736, w=1280, seed=0):
    """Dark text-like strokes (words of glyph boxes) on a light background, as BGR uint8."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 245, np.uint8)
    for y in range(40, h - 60, 56):
        x = 40 + rng.integers(0, 80)
        while x < w - 200:
            for _ in range(rng.integers(2, 9)):  # one word
                gw, gh = rng.integers(10, 20), rng.integers(20, 30)
                g = img[y + 30 - gh:y + 30, x:x + gw]
                g[:, :3] = g[:, -3:] = 30
                g[rng.integers(0, gh - 3):][:3] = 30
                x += gw + 4
            x += rng.integers(14, 40)
    return np.repeat(img[:, :, None], 3, 2)


def resize(img, w, h):
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def line_boxes(prob, thresh=0.3, unclip=1.6):
    """Axis-aligned text line boxes from a DB probability map (row bands, then column runs)."""
    mask = prob > thresh
    rows = np.flatnonzero(mask.any(1))
    boxes = []
    for band in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1):
        y0, y1 = band[0], band[-1] + 1
        if y1 - y0 < 4:
            continue
        cols = np.flatnonzero(mask[y0:y1].any(0))
        for run in np.split(cols, np.flatnonzero(np.diff(cols) > 2 * (y1 - y0)) + 1):
            x0, x1 = run[0], run[-1] + 1
            bh, bw = y1 - y0, x1 - x0
            d = bh * bw * unclip / (2 * (bh + bw))
            boxes.append((int(y0 - d), int(y1 + d), int(x0 - d), int(x1 + d)))
    return boxes


def norm_line(crop, h, w):
    """rapidocr rec/cls resize_norm_img: keep aspect, height h, width <= w, (x/255-0.5)/0.5, zero-pad right."""
    rw = min(w, math.ceil(h * crop.shape[1] / crop.shape[0]))
    x = resize(crop, rw, h).astype(np.float32).transpose(2, 0, 1) / 255
    out = np.zeros((3, h, w), np.float32)
    out[:, :, :rw] = (x - 0.5) / 0.5
    return out[None]


def rapidocr():
    cfg = config_yaml(os.path.join(M, "rapidocr/config.yaml"))
    g, det = cfg["Global"], cfg["Det"]
    src = find_image()
    if src:
        img = np.asarray(Image.open(src).convert("RGB"))[:, :, ::-1]  # rapidocr works on BGR
        print(f"rapidocr image: {src} {img.shape[1]}x{img.shape[0]}", file=sys.stderr)
    else:
        img = synthetic_page()
        print("rapidocr image: synthetic text-like page (no PNG found; pass --image)", file=sys.stderr)
    ms = int(g["max_side_len"])
    if max(img.shape[:2]) > ms:  # rapidocr main.preprocess: reduce_max_side
        r = ms / max(img.shape[:2])
        img = resize(np.ascontiguousarray(img), int(img.shape[1] * r), int(img.shape[0] * r))
    if args.det_crop != "0":
        ch, cw = map(int, args.det_crop.split("x"))
        img = np.ascontiguousarray(img[:ch, :cw])
    # DetPreProcess: scale so min (or max) side meets limit_side_len, round sides to multiples of 32
    h, w = img.shape[:2]
    lim = int(det["limit_side_len"])
    side = min(h, w) if det["limit_type"] == "min" else max(h, w)
    r = lim / side if (side < lim if det["limit_type"] == "min" else side > lim) else 1.0
    rh, rw = int(round(int(h * r) / 32) * 32), int(round(int(w * r) / 32) * 32)
    x = (resize(img, rw, rh).astype(np.float32) / 255 - np.array(det["mean"])) / np.array(det["std"])
    x = x.transpose(2, 0, 1)[None].astype(np.float32)
    prob = save("rapidocr_det", "rapidocr/ch_PP-OCRv4_det_infer.onnx", {"x": x})["sigmoid_0.tmp_0"][0, 0]

    boxes = line_boxes(prob)
    sy, sx = h / rh, w / rw
    boxes = [(max(0, int(y0 * sy)), min(h, int(y1 * sy)), max(0, int(x0 * sx)), min(w, int(x1 * sx))) for y0, y1, x0, x1 in boxes]
    print(f"det: {len(boxes)} text boxes", file=sys.stderr)
    if boxes:  # the largest line whose aspect fits the rec width without squeezing
        fit = [b for b in boxes if (b[3] - b[2]) / (b[1] - b[0]) <= 320 / 48] or boxes
        y0, y1, x0, x1 = max(fit, key=lambda b: (b[1] - b[0]) * (b[3] - b[2]))
    else:
        y0, y1, x0, x1 = 0, min(h, 48), 0, min(w, 320)
    crop = np.ascontiguousarray(img[y0:y1, x0:x1])
    ch, cw = map(int, re.findall(r"\d+", str(cfg["Rec"].get("rec_img_shape", [3, 48, 320])))[1:3])
    rec_sess = session("rapidocr/ch_PP-OCRv4_rec_infer.onnx")
    p = save("rapidocr_rec", "rapidocr/ch_PP-OCRv4_rec_infer.onnx", {"x": norm_line(crop, ch, cw)}, rec_sess)["softmax_11.tmp_0"][0]
    chars = ["blank"] + rec_sess.get_modelmeta().custom_metadata_map["character"].splitlines() + [" "]
    ids = p.argmax(1)
    text = "".join(chars[i] for j, i in enumerate(ids) if i and (j == 0 or i != ids[j - 1]))
    print(f"rec: box y{y0}:{y1} x{x0}:{x1} reads {text!r}", file=sys.stderr)
    ch, cw = [int(v) for v in cfg["Cls"]["cls_image_shape"][1:]]
    p = save("rapidocr_cls", "rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", {"x": norm_line(crop, ch, cw)})
    print(f"cls: P(0deg, 180deg) = {next(iter(p.values()))[0].round(3)}", file=sys.stderr)


# ---------------------------------------------------------------- silero VAD
def speech_like(sr=16000, secs=1.5, seed=0):
    """Voiced-speech-like audio: harmonics of a gliding f0, shaped by moving formants, in syllable bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * secs)) / sr
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    f1, f2 = 600 + 250 * np.sin(2 * np.pi * 3.1 * t), 1500 + 500 * np.sin(2 * np.pi * 2.3 * t + 1)
    x = np.zeros_like(t)
    for k in range(1, 30):
        fk = k * f0
        amp = np.exp(-((fk - f1) / 200) ** 2) + 0.6 * np.exp(-((fk - f2) / 300) ** 2) + 0.05
        x += amp / k ** 0.5 * np.sin(k * phase)
    env = np.clip(np.sin(2 * np.pi * 4 * t) * 1.5, 0, 1) ** 0.5 * (t > 0.1)
    x = 0.3 * env * x / np.abs(x).max() + 0.003 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def silero():
    audio, n, ctx, warm = speech_like(), 512, 64, 12  # save chunk #12 (~0.4 s in)
    frames = [np.concatenate([audio[max(0, i * n - ctx):i * n] if i else np.zeros(ctx, np.float32), audio[i * n:(i + 1) * n]]) for i in range(warm + 8)]
    back = {"stateN": "state", "hn": "h", "cn": "c"}
    for rel in sorted(glob.glob(os.path.join(M, "silero_vad/*.onnx"))):
        rel = os.path.relpath(rel, M)
        sess = session(rel)
        name = os.path.basename(rel)[:-5]
        seq = "sequence" in name  # input [frames, 576], one block of 8 frames
        feeds = {}
        for i in ([warm - 8, warm] if seq else range(warm + 1)):
            for inp in sess.get_inputs():
                if inp.name == "input":
                    feeds["input"] = np.stack(frames[i:i + 8]) if seq else frames[i][None]
                elif inp.name == "sr":
                    feeds["sr"] = np.array(16000, np.int64)
                elif inp.name not in feeds:
                    feeds[inp.name] = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)
            if i < warm:
                outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
                feeds.update({back[k]: v for k, v in outs.items() if k in back})
        ref = save(name, rel, feeds, sess)
        print(f"  speech prob {np.ravel(next(iter(ref.values()))).round(3)}", file=sys.stderr)


# ---------------------------------------------------------------- magika
def magika():
    cfg = json.load(open(os.path.join(M, "magika/config.min.json")))
    beg, end, pad, block = cfg["beg_size"], cfg["end_size"], cfg["padding_token"], cfg["block_size"]
    assert cfg["mid_size"] == 0 and not cfg["use_inputs_at_offsets"]
    files = [onnx.helper.__file__, os.path.join(M, "rapidocr/config.yaml"), os.path.join(M, "magika/content_types_kb.min.json"),
             os.path.join(M, "silero_vad/LICENSE"), os.path.join(M, "magika/model.onnx")]
    rows = []
    for f in files:
        data = open(f, "rb").read()
        b = data[:block].lstrip()[:beg]
        e = data[-block:].rstrip()[-end:] if end else b""
        rows.append(list(b) + [pad] * (beg - len(b)) + [pad] * (end - len(e)) + list(e))
    ref = save("magika", "magika/model.onnx", {"bytes": np.array(rows, np.int32)})
    labels = cfg["target_labels_space"]
    for f, p in zip(files, ref["target_label"]):
        print(f"  {os.path.basename(f)}: {labels[p.argmax()]} {p.max():.3f}", file=sys.stderr)


# ---------------------------------------------------------------- MiniLM
def wordpiece(text, vocab):
    """BERT uncased basic tokenizer (lowercase, strip accents, split punctuation) + greedy WordPiece."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    words = re.findall(r"\w+|[^\w\s]", text)
    ids = [vocab["[CLS]"]]
    for w in words:
        start, pieces = 0, []
        while start < len(w):
            for stop in range(len(w), start, -1):
                piece = ("##" if start else "") + w[start:stop]
                if piece in vocab:
                    pieces.append(vocab[piece]); start = stop; break
            else:
                pieces = [vocab["[UNK]"]]; break
        ids += pieces
    return ids + [vocab["[SEP]"]]


def minilm():
    vocab = {t: i for i, t in enumerate(open(os.path.join(M, "minilm/vocab.txt"), encoding="utf-8").read().splitlines())}
    ids = np.array([wordpiece("Quench quantizes ONNX models to int8 while keeping their accuracy close to float32.", vocab)], np.int64)
    ref = save("minilm", "minilm/minilm.onnx", {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    print(f"  ids {ids[0].tolist()} |embedding| {np.linalg.norm(ref['sentence_embedding']):.4f}", file=sys.stderr)


for step in (rapidocr, silero, magika, minilm):
    step()
with open(os.path.join(OUT, "manifest.tsv"), "w") as f:
    f.write("".join(f"{n}\t{rel}\t{n}.npz\t{n}.ref.npz\n" for n, rel in manifest))
print(OUT)
