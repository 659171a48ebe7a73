//! `switchboard dialplan check|test|schema`, run as the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `switchboard ARGS` in `dir` without any configuration from the environment.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .current_dir(dir)
        .env_remove("SWITCHBOARD_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run switchboard")
}

fn run(args: &[&str]) -> Output {
    run_in(&repo(), args)
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_default() {
    let output = run(&["dialplan", "check"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("dialplans/default.yaml: OK ("), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn check_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "rules:\n  - name: a\n    match: { to: { regex: \"(\" } }\n    action: { reject: { code: 200 } }\n  - name: a\n    action: { trunk: { trunks: [nowhere] } }\n",
    )
    .expect("write");
    let output = run(&["dialplan", "check", file.to_str().expect("utf-8 path")]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let name = file.display().to_string();
    for expected in [
        format!("{name}:3:27: error: to: invalid regex"),
        format!("{name}:4:31: error: reject.code: 200 is out of range"),
        format!("{name}:5:11: error: duplicate rule name 'a'"),
        format!(
            "{name}:6:33: error: trunk.trunks: unknown trunk 'nowhere' (no trunks are configured)"
        ),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "missing '{expected}' in:\n{stderr}"
        );
    }
    assert!(stdout.contains("4 errors, 0 warnings"), "{stdout}");
}

#[test]
fn check_prints_warnings_and_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("warn.yaml");
    std::fs::write(
        &file,
        "rules:\n  - name: a\n    match: { to: \"600\" }\n    action: { echo: {} }\n  - name: b\n    match: { to: \"600\" }\n    action: { echo: {} }\n",
    )
    .expect("write");
    let output = run(&["dialplan", "check", file.to_str().expect("utf-8 path")]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:5:5: warning: rule 'b' never matches",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stdout.contains("OK (2 rules, 1 warning)"), "{stdout}");
}

#[test]
fn test_routes_a_call_between_users() {
    let output = run(&["dialplan", "test", "--from", "1001", "--to", "1002"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("matched rule 'local-users' (dialplans/default.yaml:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("because:\n  - to '1002' matches regex ^(1[0-9]{3})$ ($1='1002')"),
        "{stdout}"
    );
    assert!(
        stdout.contains("action:\n  user: ring 1002 for 30 s\n  on no answer:\n    reject: 480"),
        "{stdout}"
    );
}

#[test]
fn test_routes_the_echo_test() {
    let output = run(&["dialplan", "test", "--from", "1001", "--to", "600"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("matched rule 'echo-test'"), "{stdout}");
    assert!(stdout.contains("  echo"), "{stdout}");
}

#[test]
fn test_refuses_international_calls_without_the_group() {
    let output = run(&["dialplan", "test", "--from", "1001", "--to", "+15551234567"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("local user 1001, groups demo"), "{stdout}");
    assert!(
        stdout.contains("matched rule 'international-blocked'"),
        "{stdout}"
    );
    assert!(stdout.contains("reject: 403"), "{stdout}");
}

#[test]
fn test_uses_config_groups_trunks_time_headers_and_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("switchboard.yaml"),
        "domains:\n  - name: example.com\n    users:\n      - { username: \"1001\", password: x, groups: [international] }\ntrunks:\n  - { name: carrier-a, host: 192.0.2.1 }\n",
    )
    .expect("write config");
    std::fs::write(
        dir.path().join("plan.yaml"),
        r#"timezone: Europe/Berlin
rules:
  - name: night-from-office
    match:
      source: ["ip:192.0.2.0/24"]
      time: { hours: "22:00-06:00" }
      headers: { X-Priority: urgent }
    action: { reject: { code: 480, reason: "Closed" } }
  - name: abroad
    match: { to: { regex: "^00([1-9][0-9]+)$" }, caller_groups: [international] }
    rewrite: [ { replace: { regex: "^00", with: "+" } } ]
    action: { trunk: { trunks: [carrier-a] } }
"#,
    )
    .expect("write plan");
    let output = run_in(
        dir.path(),
        &[
            "dialplan",
            "test",
            "--file",
            "plan.yaml",
            "--from",
            "1001",
            "--to",
            "004930123",
        ],
    );
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("matched rule 'abroad'"), "{stdout}");
    assert!(stdout.contains("called number: +4930123"), "{stdout}");
    assert!(stdout.contains("trunk: carrier-a"), "{stdout}");

    let args = [
        "dialplan",
        "test",
        "--file",
        "plan.yaml",
        "--from",
        "x",
        "--to",
        "1",
        "--source",
        "ip:192.0.2.9",
    ];
    let night = [
        &args[..],
        &[
            "--time",
            "2026-11-21T23:30:00",
            "--header",
            "X-Priority: urgent",
        ],
    ]
    .concat();
    let output = run_in(dir.path(), &night);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("matched rule 'night-from-office'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("time Sat 2026-11-21 23:30 Europe/Berlin is within 22:00-06:00"),
        "{stdout}"
    );

    // At noon no rule matches: exit code 2.
    let noon = [
        &args[..],
        &[
            "--time",
            "2026-11-21T12:00:00",
            "--header",
            "X-Priority: urgent",
        ],
    ]
    .concat();
    let output = run_in(dir.path(), &noon);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("no rule matched"), "{stdout}");
}

#[test]
fn office_example_checks_and_routes_with_its_configuration() {
    let config = ["--config", "dialplans/examples/switchboard.yaml"];
    let output = run(&[&config[..], &["dialplan", "check"]].concat());
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("dialplans/examples/office.yaml: OK (10 rules, 0 warnings)"),
        "{stdout}"
    );
    let output = run(&[
        &config[..],
        &[
            "dialplan",
            "test",
            "--from",
            "1042",
            "--to",
            "0044207123456",
        ],
    ]
    .concat());
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("matched rule 'international' (dialplans/examples/carriers.yaml:"),
        "{stdout}"
    );
    assert!(stdout.contains("called number: +44207123456"), "{stdout}");
    assert!(
        stdout.contains("caller id: user '+493012345642', display 'ACME Office'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("trunk: carrier-a, then carrier-b (next trunk on 408, 5xx, timeout)"),
        "{stdout}"
    );
}

#[test]
fn schema_prints_json() {
    let output = run(&["dialplan", "schema"]);
    assert_eq!(output.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    assert_eq!(schema["title"], "Switchboard dialplan");
}

#[test]
fn documented_schema_is_up_to_date() {
    let output = run(&["dialplan", "schema"]);
    let generated = String::from_utf8(output.stdout).expect("utf-8");
    let documented = std::fs::read_to_string(repo().join("docs/dialplan.schema.json"))
        .expect("docs/dialplan.schema.json");
    assert!(
        generated == documented,
        "docs/dialplan.schema.json is out of date; regenerate it with:\n  cargo run -- dialplan schema > docs/dialplan.schema.json"
    );
}
