//! Fuzzes the host envelope parser and the binding readers behind
//! `POST /<FunctionName>`: no input may panic them.
#![no_main]

use azure_redis_handler::host::{binding, parse_invocation, HttpRequestData, TimerInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_invocation(data) {
        let _ = binding::<TimerInfo>(&request.data, None);
        if let Some(http) = binding::<HttpRequestData>(&request.data, Some("req")) {
            let _ = http.path_and_query();
            let _ = http.header_pairs();
            let _ = http.body_bytes();
        }
    }
});
