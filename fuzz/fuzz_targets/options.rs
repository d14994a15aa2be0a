//! A container's environment, its annotations and runq's flags, as anyone may set them:
//! refused or accepted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runq::options::RunqOptions;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let _ = RunqOptions::default().apply_env(&lines);
    let annotations = lines.iter().filter_map(|line| line.split_once('='));
    let _ = RunqOptions::default().apply_annotations(annotations);
    for line in &lines {
        if let Some((flag, value)) = line.split_once(' ') {
            let _ = RunqOptions::default().set_flag(flag, Some(value));
        }
    }
});
