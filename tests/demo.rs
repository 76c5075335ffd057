//! End to end: the `nimbus` binary's default demo runs and prints its report.

use std::process::Command;

#[test]
fn demo_prints_the_report_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["demo", "--seconds", "0.3", "--callers", "8"])
        .output()
        .expect("run the nimbus binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for needle in [
        "function",
        "resize",
        "checkout",
        "parse",
        "report",
        "cold",
        "GB-s",
        "shutdown:",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn demo_rejects_bad_arguments_with_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["demo", "--seconds", "0"])
        .output()
        .expect("run the nimbus binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--seconds"), "{stderr}");
}
