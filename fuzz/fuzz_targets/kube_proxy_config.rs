#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netpressure_exporter::fuzzing::kube_proxy_config(data));
