//! The packaging in `dist/`: the Debian package built the way `dist/deb.sh` builds it, unpacked
//! into a scratch root and its binary run against its own configuration; and the files the
//! package and the container image install, checked against what sluice expects of them.
//!
//! Building the package takes a release build, so that test is ignored by a plain
//! `cargo test`; `.ci/run` runs it with `cargo test --test package -- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TempDir;
use sluice::config::directive::Role;
use sluice::settings::{Config, EMBEDDED_DEFAULT};

fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(source(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The values of `key=` lines in a systemd unit, in order.
fn unit_values<'u>(unit: &'u str, key: &str) -> Vec<&'u str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_packaged_configuration_is_the_embedded_default() {
    assert_eq!(read("dist/proxy.conf"), EMBEDDED_DEFAULT);
}

#[test]
fn the_unit_tests_before_starting_and_reloading_and_stops_gracefully() {
    let unit = read("dist/sluice.service");
    let test = "/usr/bin/sluice -t -c /etc/sluice/proxy.conf";
    assert_eq!(unit_values(&unit, "ExecStartPre"), [test]);
    assert_eq!(
        unit_values(&unit, "ExecStart"),
        ["/usr/bin/sluice -c /etc/sluice/proxy.conf"]
    );
    assert_eq!(
        unit_values(&unit, "ExecReload"),
        [test, "/bin/kill -HUP $MAINPID"]
    );
    assert_eq!(unit_values(&unit, "KillSignal"), ["SIGQUIT"]);
    // systemd sends SIGKILL after TimeoutStopSec: the drain must end first.
    let stop: u64 = unit_values(&unit, "TimeoutStopSec")[0].parse().unwrap();
    let drain = Config::embedded().shutdown_timeout.as_secs();
    assert!(
        stop > drain,
        "TimeoutStopSec={stop} <= shutdown_timeout {drain}s"
    );
    assert_eq!(unit_values(&unit, "DynamicUser"), ["yes"]);
    assert_eq!(unit_values(&unit, "LimitNOFILE"), ["65536"]);
    // The directory the logrotate file rotates is the one the unit lets sluice write.
    assert_eq!(unit_values(&unit, "LogsDirectory"), ["sluice"]);
    assert_eq!(unit_values(&unit, "WantedBy"), ["multi-user.target"]);
}

#[test]
fn logrotate_moves_the_logs_then_sends_sigusr1_to_sluice() {
    let logrotate = read("dist/sluice.logrotate");
    assert!(logrotate.contains("/var/log/sluice/*.log {"), "{logrotate}");
    let postrotate = logrotate
        .split_once("postrotate")
        .and_then(|(_, rest)| rest.split_once("endscript"))
        .map(|(script, _)| script)
        .expect("a postrotate script");
    assert!(postrotate.contains("--signal=SIGUSR1"), "{postrotate}");
    assert!(
        postrotate.contains("--kill-who=main sluice.service"),
        "{postrotate}"
    );
}

#[test]
fn the_container_configuration_loads_and_the_image_stops_gracefully() {
    let config = source("dist/container.conf");
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["-t", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Listening on 0.0.0.0 behind a closed allow/deny list: no open-proxy warning, no other.
    assert!(!stderr.contains("[warn]"), "{stderr}");
    let text = read("dist/container.conf");
    assert!(text.contains("listen 0.0.0.0:3128;"), "{text}");
    assert!(text.contains("deny all;"), "{text}");

    let dockerfile = read("Dockerfile");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .collect();
    let has = |line: &str| instructions.contains(&line);
    assert!(has("FROM rust:1-bookworm AS build"), "{dockerfile}");
    assert!(has("FROM debian:bookworm-slim"), "{dockerfile}");
    assert!(
        has("COPY dist/container.conf /etc/sluice/proxy.conf"),
        "{dockerfile}"
    );
    assert!(has("USER sluice"), "{dockerfile}");
    assert!(has("EXPOSE 3128"), "{dockerfile}");
    assert!(has("STOPSIGNAL SIGQUIT"), "{dockerfile}");
    assert!(
        has(r#"CMD ["-c", "/etc/sluice/proxy.conf"]"#),
        "{dockerfile}"
    );
    // The build context leaves out the build directory.
    assert!(read(".dockerignore").lines().any(|l| l == "target"));
}

/// Builds the package with `dist/deb.sh`, reads its contents and control fields, unpacks it
/// into a scratch root and runs the unpacked binary on the unpacked configuration.
#[test]
#[ignore = "a release build: run by .ci/run with --ignored"]
fn the_debian_package_installs_and_its_binary_tests_its_configuration() {
    if !(common::require_tool("cargo-deb")
        && common::require_tool("dpkg-deb")
        && common::require_tool("gzip"))
    {
        return;
    }
    let scratch = TempDir(common::temp_dir());
    let deb = scratch.0.join("sluice.deb");
    run(Command::new(source("dist/deb.sh"))
        .args(["--output", deb.to_str().unwrap()])
        .current_dir(source(".")));

    // Contents: every file, where Debian expects it.
    let listing = stdout(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    println!("dpkg-deb -c:\n{listing}");
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|line| !line.starts_with('d'))
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    files.sort_unstable();
    let mut expected = vec![
        "./etc/logrotate.d/sluice",
        "./etc/sluice/proxy.conf",
        "./usr/bin/sluice",
        "./usr/lib/systemd/system/sluice.service",
        "./usr/share/doc/sluice/README.md",
        "./usr/share/doc/sluice/copyright",
        "./usr/share/doc/sluice/proxy.conf.example",
        "./usr/share/man/man8/sluice.8.gz",
    ];
    let docs: Vec<String> = std::fs::read_dir(source("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("./usr/share/doc/sluice/docs/{name}"))
        .collect();
    expected.extend(docs.iter().map(String::as_str));
    expected.sort_unstable();
    assert_eq!(files, expected);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with("./usr/bin/sluice")),
        "{listing}"
    );

    // Control: name, version, dependencies, conffiles, the unit's maintainer scripts.
    let field = |name: &str| {
        stdout(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)))
            .trim()
            .to_string()
    };
    assert_eq!(field("Package"), "sluice");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Section"), "net");
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    let control = scratch.0.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/sluice/proxy.conf"),
        "{conffiles}"
    );
    assert!(
        conffiles.lines().any(|l| l == "/etc/logrotate.d/sluice"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("sluice.service"), "{postinst}");

    // Unpacked into a scratch root, as `dpkg --root` would lay it out.
    let root = scratch.0.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let sluice = root.join("usr/bin/sluice");
    let config = root.join("etc/sluice/proxy.conf");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), EMBEDDED_DEFAULT);
    let tested = run(Command::new(&sluice).args(["-t", "-c"]).arg(&config));
    let report = String::from_utf8_lossy(&tested.stderr);
    assert!(report.contains("test is successful"), "{report}");
    assert!(!report.contains("[warn]"), "{report}");
    let version = stdout(&run(Command::new(&sluice).arg("-V")));
    assert_eq!(version.trim(), sluice::AGENT);

    // The unit starts the binary the package installs, on the configuration it installs.
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/sluice.service")).unwrap();
    assert_eq!(unit, read("dist/sluice.service"));
    for command in unit_values(&unit, "ExecStart") {
        let program = command.split_whitespace().next().unwrap();
        assert!(
            root.join(&program[1..]).is_file(),
            "{program} is not in the package"
        );
    }

    // The man page is the one the packaged binary prints, and lists every directive.
    let page = stdout(&run(Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man8/sluice.8.gz"))));
    assert_eq!(page, stdout(&run(Command::new(&sluice).arg("--man"))));
    for spec in sluice::settings::directives() {
        let row = match spec.role {
            Role::Used => format!("\n{}\t", spec.name),
            Role::Ignored(_) | Role::Unsupported(_) => format!("\n.B {}\n", spec.name),
        };
        assert!(
            page.contains(&row),
            "{} is not in the packaged man page",
            spec.name
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("usr/share/doc/sluice/README.md")).unwrap(),
        read("README.md")
    );
}
