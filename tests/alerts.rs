//! The Prometheus files in `deploy/prometheus` checked by `promtool`: the
//! alerting rules parse, their unit tests (`alerts_test.yml`) pass, and the
//! example scrape configuration is valid. A missing `promtool` fails the
//! tests; it never skips them.

use std::path::PathBuf;
use std::process::Command;

fn prometheus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

/// Runs `promtool <args> <file in deploy/prometheus>` and fails the test with
/// promtool's output unless it succeeds.
fn promtool(args: &[&str], file: &str) {
    let path = prometheus_dir().join(file);
    assert!(path.is_file(), "{} is missing", path.display());
    let output = match Command::new("promtool").args(args).arg(&path).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH: install Debian's prometheus package \
             (bash .ci/run does)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    assert!(
        output.status.success(),
        "promtool {} {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn alert_rules_are_valid() {
    promtool(&["check", "rules"], "alerts.yml");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules"], "alerts_test.yml");
}

#[test]
fn scrape_config_is_valid_and_loads_the_rules() {
    promtool(&["check", "config"], "prometheus.yml");
}

/// Runs `promtool <args>` with `input` on stdin and fails the test with its
/// output unless it succeeds (`promtool check metrics` reads stdin).
pub(crate) fn promtool_stdin(args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = match Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH: install Debian's prometheus package \
             (bash .ci/run does)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- input\n{input}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
