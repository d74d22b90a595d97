//! The command line beyond running: `-T` (test and print, as nginx -T) and the manual page
//! `--man` prints, which the Debian package installs.

mod common;

use std::process::{Command, Output};

use common::TempDir;
use sluice::config::directive::Role;
use sluice::settings::EMBEDDED_DEFAULT;

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn capital_t_tests_the_file_and_prints_it_as_written() {
    let dir = TempDir(common::temp_dir());
    let path = dir.0.join("proxy.conf");
    // Comments, odd spacing and an ignored directive: printed exactly as written.
    let config = "# egress\nserver {\n    listen 127.0.0.1:0;   # loopback\n    root /srv;\n  proxy_connect;\n}\n";
    std::fs::write(&path, config).unwrap();
    let shown = path.to_str().unwrap();

    let output = sluice(&["-T", "-c", shown]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!("# configuration file {shown}:\n{config}\n")
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains("[warn]"), "{stderr}");
    assert!(
        stderr.contains(&format!("configuration file {shown} test is successful")),
        "{stderr}"
    );
}

#[test]
fn capital_t_without_c_prints_the_embedded_default() {
    let output = sluice(&["-T"]);

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!("# configuration file (embedded default):\n{EMBEDDED_DEFAULT}\n")
    );
    assert!(text(&output.stderr).contains("(embedded default) test is successful"));
}

#[test]
fn capital_t_on_a_bad_file_fails_as_t_does_and_prints_nothing() {
    let dir = TempDir(common::temp_dir());
    let path = dir.0.join("proxy.conf");
    std::fs::write(
        &path,
        "server {\n    listen 127.0.0.1:0;\n    frobnicate;\n}\n",
    )
    .unwrap();
    let shown = path.to_str().unwrap();

    let output = sluice(&["-T", "-c", shown]);

    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("unknown directive \"frobnicate\" in {shown}:3")),
        "{stderr}"
    );
    assert!(stderr.contains("test failed"), "{stderr}");

    let missing = dir.0.join("missing.conf");
    let output = sluice(&["-T", "-c", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
}

#[test]
fn the_manual_lists_every_directive_sluice_knows() {
    let output = sluice(&["--man"]);
    assert!(output.status.success());
    let page = text(&output.stdout);

    for section in [
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH SIGNALS",
        ".SH DIRECTIVES",
        ".SH FILES",
        ".SH EXIT STATUS",
    ] {
        assert!(page.contains(section), "no {section}");
    }
    for option in [
        ".BI \"\\-c, \\-\\-config \" file",
        ".B \\-t, \\-\\-test\n",
        ".B \\-T, \\-\\-test\\-and\\-print\n",
        ".B \\-V, \\-\\-version\n",
    ] {
        assert!(page.contains(option), "no {option} in the manual");
    }
    for signal in [
        "SIGQUIT", "SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH",
    ] {
        assert!(page.contains(signal), "no {signal}");
    }
    let mut listed = 0;
    for spec in sluice::settings::directives() {
        let name = spec.name.replace('-', "\\-");
        // A table row starts with the name and a tab; ignored and refused ones have an entry.
        let row = match spec.role {
            Role::Used => format!("\n{name}\t"),
            Role::Ignored(_) | Role::Unsupported(_) => format!("\n.B {name}\n"),
        };
        assert!(page.contains(&row), "{} is not in the manual", spec.name);
        listed += 1;
    }
    assert!(listed > 40, "only {listed} directives in the registry");
}

#[test]
fn the_manual_is_not_in_the_help() {
    let output = sluice(&["--help"]);
    let help = text(&output.stdout);
    assert!(help.contains("-T"), "{help}");
    assert!(!help.contains("--man"), "{help}");
}
