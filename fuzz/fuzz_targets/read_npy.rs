//! Any bytes -> `read_npy_bytes`: errors are fine, panics and huge
//! allocations are bugs. A tensor that reads must write and read back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = quench_data::read_npy_bytes(data, "fuzz") else {
        return;
    };
    let bytes = quench_data::write_npy_bytes(&t).expect("a read tensor must write");
    let back =
        quench_data::read_npy_bytes(&bytes, "rewritten").expect("a written tensor must read");
    assert_eq!(back.shape(), t.shape());
    assert_eq!(back.dtype(), t.dtype());
    let bytes2 = quench_data::write_npy_bytes(&back).expect("a reread tensor must write");
    assert!(bytes == bytes2, "write -> read -> write is not stable");
});
