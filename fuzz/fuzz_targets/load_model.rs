//! Any bytes -> `model_from_bytes`: errors are fine, panics, aborts, runaway
//! memory and timeouts are bugs. A model that loads must also save, reload
//! to the same bytes, and plan (or fail to plan) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quench_runtime::{Plan, Registry};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = quench_onnx::model_from_bytes(data, None) else {
        return;
    };
    let bytes = quench_onnx::model_to_bytes(&model).expect("a loaded model must save");
    let again = quench_onnx::model_from_bytes(&bytes, None).expect("a saved model must reload");
    let bytes2 = quench_onnx::model_to_bytes(&again).expect("a reloaded model must save");
    assert!(bytes == bytes2, "save -> load -> save is not stable");
    let _ = Plan::new(&model, &Registry::standard());
});
