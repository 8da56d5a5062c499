/// Element types, numbered as `onnx.TensorProto.DataType`.
///
/// Every ONNX type is named so that any model round-trips; only some have an
/// in-memory form for computation (see [`crate::TensorData`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    U8,
    I8,
    U16,
    I16,
    I32,
    I64,
    String,
    Bool,
    F16,
    F64,
    U32,
    U64,
    Complex64,
    Complex128,
    BF16,
    /// Any other ONNX code (float8 variants, int4, ...): kept, not computed.
    Other(i32),
}

impl DType {
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            0 => return None,
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            4 => DType::U16,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            8 => DType::String,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            12 => DType::U32,
            13 => DType::U64,
            14 => DType::Complex64,
            15 => DType::Complex128,
            16 => DType::BF16,
            c => DType::Other(c),
        })
    }

    pub fn to_onnx(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::String => 8,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U32 => 12,
            DType::U64 => 13,
            DType::Complex64 => 14,
            DType::Complex128 => 15,
            DType::BF16 => 16,
            DType::Other(c) => c,
        }
    }

    /// Bytes per element in ONNX `raw_data`, where that is a whole number.
    pub fn size_of(self) -> Option<usize> {
        Some(match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 | DType::Complex64 => 8,
            DType::Complex128 => 16,
            // float8 variants are one byte; int4/uint4/float4 are packed two per byte.
            DType::Other(17..=20) => 1,
            DType::String | DType::Other(_) => return None,
        })
    }

    /// The lower-case name ONNX and numpy users know (`float32`, `int64`, ...).
    pub fn name(self) -> String {
        match self {
            DType::F32 => "float32".into(),
            DType::U8 => "uint8".into(),
            DType::I8 => "int8".into(),
            DType::U16 => "uint16".into(),
            DType::I16 => "int16".into(),
            DType::I32 => "int32".into(),
            DType::I64 => "int64".into(),
            DType::String => "string".into(),
            DType::Bool => "bool".into(),
            DType::F16 => "float16".into(),
            DType::F64 => "float64".into(),
            DType::U32 => "uint32".into(),
            DType::U64 => "uint64".into(),
            DType::Complex64 => "complex64".into(),
            DType::Complex128 => "complex128".into(),
            DType::BF16 => "bfloat16".into(),
            DType::Other(17) => "float8e4m3fn".into(),
            DType::Other(18) => "float8e4m3fnuz".into(),
            DType::Other(19) => "float8e5m2".into(),
            DType::Other(20) => "float8e5m2fnuz".into(),
            DType::Other(21) => "uint4".into(),
            DType::Other(22) => "int4".into(),
            DType::Other(23) => "float4e2m1".into(),
            DType::Other(c) => format!("onnx-type-{c}"),
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
