//! End to end: `nimbus bench` prints JSON lines with the documented fields, and `--plot` draws
//! the autoscale curve against Little's law.

use std::process::Command;

fn nimbus(args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(args)
        .output()
        .expect("run the nimbus binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "nimbus {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn json_lines_carry_the_documented_fields() {
    let (stdout, _) = nimbus(&["bench", "invoke", "--quick", "--json", "--events", "2000"]);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    assert_eq!(rows.len(), 6, "3 systems x 2 caller counts:\n{stdout}");
    for row in &rows {
        for field in [
            "scenario",
            "system",
            "events",
            "seconds",
            "events_per_sec",
            "nimbus_speedup",
        ] {
            assert!(row.get(field).is_some(), "missing {field} in {row}");
        }
        assert_eq!(row["events"], 2000);
        assert!(row["events_per_sec"].as_f64().unwrap() > 0.0);
    }
    let nimbus_rows: Vec<_> = rows.iter().filter(|r| r["system"] == "nimbus").collect();
    assert_eq!(nimbus_rows.len(), 2);
    assert!(nimbus_rows.iter().all(|r| r["nimbus_speedup"] == 1.0));
}

#[test]
fn plot_draws_the_autoscale_curve_against_littles_law() {
    let path = std::env::temp_dir().join(format!("nimbus-autoscale-{}.svg", std::process::id()));
    let path_str = path.to_str().expect("utf-8 temp path");
    let (stdout, _) = nimbus(&["bench", "autoscale", "--quick", "--plot", path_str]);
    assert!(stdout.contains("little_target"), "{stdout}");
    let svg = std::fs::read_to_string(&path).expect("the SVG was written");
    std::fs::remove_file(&path).ok();
    assert!(svg.starts_with("<svg"), "an SVG document");
    assert!(svg.contains("Little"), "the λ·d line is labelled");
    assert!(svg.contains("nimbus") && svg.contains("tokio spawn per event"));
    assert!(
        svg.matches("<polyline").count() >= 4,
        "curves for both systems in both charts"
    );
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["bench", "latency", "--rate-fraction", "1.5"])
        .output()
        .expect("run the nimbus binary");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--rate-fraction"));
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["bench", "invoke", "--plot", "x.svg", "--events", "1000"])
        .output()
        .expect("run the nimbus binary");
    assert!(
        !output.status.success(),
        "--plot without the autoscale scenario"
    );
}

#[cfg(not(feature = "brokers"))]
#[test]
fn broker_scenarios_without_the_feature_say_how_to_get_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_nimbus"))
        .args(["bench", "redis", "--quick"])
        .output()
        .expect("run the nimbus binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--features brokers"), "{stderr}");
}
