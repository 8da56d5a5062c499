//! Quench's own intermediate representation.
//!
//! ONNX is only the file format at both ends; every pass, the runtime and the
//! quantizer work on these types. Values are named by strings, as in ONNX, so a
//! graph can be saved, loaded, compared and drawn at any stage.

pub mod dtype;
pub mod error;
pub mod fs;
pub mod graph;
pub mod shape_inference;
pub mod tensor;

pub use dtype::DType;
pub use error::IrError;
pub use graph::{Attr, Dim, Graph, Model, Node, OpsetImport, ValueInfo, ValueType};
pub use tensor::{Elem, Tensor, TensorData};
