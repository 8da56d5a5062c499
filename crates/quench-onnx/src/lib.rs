//! ONNX protobuf files <-> [`quench_ir::Model`].
//!
//! Loading validates what the rest of Quench relies on (tensor sizes, dtypes,
//! external-data bounds) so later stages never see a malformed model.

#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!("generated/onnx.rs");
}

mod error;
mod load;
mod save;
mod tensor;

pub use error::OnnxError;
pub use load::{load_model, model_from_bytes};
pub use save::{model_to_bytes, save_model, save_model_with_external_data};
pub use tensor::{tensor_from_proto, tensor_to_proto};
