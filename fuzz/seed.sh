#!/usr/bin/env bash
# Fills fuzz/corpus/ with small seed inputs (the corpus is gitignored).
# Usage: fuzz/seed.sh   (from anywhere; needs the ONNX node tests generated
# in ~/.cache/quench/onnx-node-tests/1.23.2 and, for .npy seeds, the venv's numpy)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tests="${ONNX_NODE_TESTS:-$HOME/.cache/quench/onnx-node-tests/1.23.2}"
models="${QUENCH_MODELS:-$HOME/.cache/quench/models}"
py="${PYTHON:-$HOME/.cache/quench/venv/bin/python}"

mkdir -p "$here/corpus/load_model" "$here/corpus/read_npy"

# Diverse node tests: subgraphs (If/Loop/Scan), sequences and optionals,
# strings, sub-byte and float8 dtypes, initializers, ml domain, many attributes.
cases=(
  test_if test_if_seq test_if_opt test_loop11 test_loop13_seq test_loop16_seq_none
  test_scan9_sum test_scan_sum test_constant test_constant_pad
  test_castlike_FLOAT_to_FLOAT16 test_cast_FLOAT_to_FLOAT8E4M3FN test_cast_FLOAT_to_INT4
  test_cast_FLOAT_to_UINT4 test_cast_FLOAT_to_BFLOAT16 test_conv_with_strides_padding
  test_convtranspose test_gemm_default_scalar_bias test_matmul_2d test_matmulinteger
  test_qlinearconv test_qlinearmatmul_2D_uint8_float32 test_dequantizelinear
  test_quantizelinear test_dequantizelinear_int4 test_lstm_defaults test_gru_defaults
  test_rnn_seq_length test_resize_upsample_scales_linear test_reshape_reordered_all_dims
  test_slice test_gather_0 test_scatter_elements_with_axis test_einsum_batch_diagonal
  test_string_concat test_regex_full_match_basic
  test_strnormalizer_export_monday_casesensintive_lower
  test_sequence_map_add_1_sequence_1_tensor test_optional_get_element_tensor
  test_optional_has_element_empty_optional_input test_split_to_sequence_1
  test_tfidfvectorizer_tf_only_bigrams_skip0 test_layer_normalization_4d_axis0
  test_range_float_type_positive_delta_expanded test_nonmaxsuppression_center_point_box_format
  test_unique_sorted_with_axis test_bitshift_right_uint64 test_constantofshape_int_zeros
  test_eyelike_with_dtype test_ai_onnx_ml_tree_ensemble_set_membership
  test_ai_onnx_ml_label_encoder_string_int test_stft test_attention_3d test_rotary_embedding
)
n=0
for c in "${cases[@]}"; do
  if [[ -f "$tests/$c/model.onnx" ]]; then
    cp "$tests/$c/model.onnx" "$here/corpus/load_model/$c.onnx"
    n=$((n + 1))
  else
    echo "seed.sh: skipping $c (not generated)" >&2
  fi
done
cls="$models/rapidocr/ch_ppocr_mobile_v2.0_cls_infer.onnx"
if [[ -f "$cls" ]]; then
  cp "$cls" "$here/corpus/load_model/ppocr_cls.onnx"
  n=$((n + 1))
fi
echo "seed.sh: $n load_model seeds"

# .npy seeds: every dtype Quench reads, both byte orders, Fortran order, v2/v3 headers.
if [[ -x "$py" ]]; then
  "$py" - "$here/corpus/read_npy" <<'PY'
import io, sys, numpy as np
from numpy.lib import format as fmt
out = sys.argv[1]
arrays = {
    "f4": np.arange(6, dtype="<f4").reshape(2, 3),
    "f8_be": np.arange(4, dtype=">f8"),
    "i1": np.array([-1, 2, -3], dtype="i1"),
    "u1": np.arange(5, dtype="u1"),
    "i2": np.arange(4, dtype="<i2").reshape(2, 2),
    "u2_be": np.arange(3, dtype=">u2"),
    "i4": np.arange(8, dtype="<i4").reshape(2, 2, 2),
    "u4": np.arange(2, dtype="<u4"),
    "i8": np.arange(3, dtype="<i8"),
    "u8_be": np.arange(3, dtype=">u8"),
    "b1": np.array([True, False, True]),
    "scalar": np.float32(3.5),
    "empty": np.zeros((0, 4), dtype="<f4"),
    "fortran": np.asfortranarray(np.arange(12, dtype="<f4").reshape(3, 4)),
}
for name, a in arrays.items():
    np.save(f"{out}/{name}.npy", a)
for version in [(2, 0), (3, 0)]:
    b = io.BytesIO()
    fmt.write_array(b, np.arange(4, dtype="<f4"), version=version)
    open(f"{out}/v{version[0]}.npy", "wb").write(b.getvalue())
PY
  echo "seed.sh: $(ls "$here/corpus/read_npy" | wc -l) read_npy seeds"
else
  echo "seed.sh: no python at $py, read_npy starts from an empty corpus" >&2
fi
