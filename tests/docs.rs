//! README.md and docs/: every configuration they show loads with `sluice -t`, every link leads
//! to a file and heading that exist, and the packaged files they quote are the ones in dist/.
//!
//! A ```nginx block is a whole configuration file; a part of one is fenced ```nginx fragment.
//! Paths under /etc/sluice and /var/log/sluice are moved into a scratch directory, where the
//! password file the examples name exists.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TempDir, certificates, require_tool};

fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// README.md and every docs/*.md, by their path in the repository.
fn documents() -> Vec<(String, String)> {
    let mut names = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(source("docs"))
        .expect("docs/")
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(source(&name)).unwrap();
            (name, text)
        })
        .collect()
}

/// The fenced blocks of `text` whose info string is exactly `info`, with their first line.
fn blocks(text: &str, info: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    // The open block: its first line, its info string, its text.
    let mut open: Option<(usize, String, String)> = None;
    for (index, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (Some(_), Some(_)) => {
                let (first, kind, body) = open.take().unwrap();
                if kind == info {
                    found.push((first, body));
                }
            }
            (Some((_, _, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, Some(kind)) => open = Some((index + 1, kind.trim().to_string(), String::new())),
            (None, None) => {}
        }
    }
    found
}

/// The certificates the TLS examples name, made in `etc`: `proxy.pem` and `proxy.key`, and the
/// CAs `clients-ca.pem` and `corp-ca.pem` (all one self-signed CA here).
fn make_certificates(etc: &Path) {
    let (proxy, _) = certificates::self_signed(
        etc,
        "proxy",
        "/CN=proxy.example",
        &["basicConstraints=critical,CA:TRUE"],
    );
    for ca in ["clients-ca.pem", "corp-ca.pem"] {
        std::fs::copy(&proxy, etc.join(ca)).unwrap();
    }
}

#[test]
fn every_configuration_in_the_readme_and_docs_loads() {
    let scratch = TempDir(common::temp_dir());
    let etc = scratch.0.join("etc/sluice");
    let log = scratch.0.join("var/log/sluice");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(etc.join("htpasswd"), "alice:{PLAIN}secret\n").unwrap();
    std::fs::write(etc.join("corp.cred"), "sluice:secret\n").unwrap();
    let certificates = require_tool("openssl");
    if certificates {
        make_certificates(&etc);
    }
    let mut in_readme = 0;
    for (name, text) in documents() {
        for (line, config) in blocks(&text, "nginx") {
            if !certificates && config.contains("ssl") {
                eprintln!("SKIPPED: {name}:{line} needs certificates made by openssl");
                continue;
            }
            let config = config
                .replace("/etc/sluice/", &format!("{}/", etc.display()))
                .replace("/var/log/sluice/", &format!("{}/", log.display()));
            let path = etc.join("proxy.conf");
            std::fs::write(&path, &config).unwrap();
            let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["-t", "-c", path.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "the configuration at {name}:{line} does not load:\n{}\n{config}",
                String::from_utf8_lossy(&output.stderr)
            );
            if name == "README.md" {
                in_readme += 1;
            }
        }
    }
    assert!(
        in_readme >= 3,
        "only {in_readme} configurations in README.md"
    );
}

#[test]
fn the_readme_reads_in_two_minutes() {
    let readme = std::fs::read_to_string(source("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; the reference belongs in docs/"
    );
}

/// A heading's anchor, as GitHub makes it.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// The targets of the Markdown links `[text](target)` in `text`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_link_in_the_readme_and_docs_leads_to_a_file_and_heading() {
    let documents = documents();
    let mut linked_docs = Vec::new();
    for (name, text) in &documents {
        let dir = Path::new(name).parent().unwrap();
        for target in links(text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                PathBuf::from(name)
            } else {
                dir.join(path)
            };
            let full = source(file.to_str().unwrap());
            assert!(full.exists(), "{name}: the link {target} leads nowhere");
            if name == "README.md" {
                linked_docs.push(file.clone());
            }
            if !fragment.is_empty() {
                let linked = std::fs::read_to_string(&full).unwrap();
                assert!(
                    anchors(&linked).iter().any(|a| a == fragment),
                    "{name}: the link {target} names no heading of {}",
                    file.display()
                );
            }
        }
    }
    for (name, _) in documents.iter().filter(|(name, _)| name != "README.md") {
        assert!(
            linked_docs.iter().any(|linked| linked == Path::new(name)),
            "README.md does not link to {name}"
        );
    }
}

#[test]
fn the_docs_quote_the_files_the_package_installs() {
    let read = |path: &str| std::fs::read_to_string(source(path)).unwrap();
    let unit = read("dist/sluice.service");
    assert!(
        read("docs/operations.md").contains(&format!("```ini\n{unit}```")),
        "docs/operations.md does not show dist/sluice.service as it is"
    );
    let logrotate = read("dist/sluice.logrotate");
    assert!(
        read("docs/access-log.md").contains(&format!("```text\n{logrotate}```")),
        "docs/access-log.md does not show dist/sluice.logrotate as it is"
    );
}

#[test]
fn fenced_blocks_are_found_with_their_line() {
    let text = "a\n```nginx\nserver {}\n```\n```sh\nls\n```\n```nginx fragment\nx;\n```\n";
    assert_eq!(blocks(text, "nginx"), [(2, "server {}\n".to_string())]);
    assert_eq!(blocks(text, "nginx fragment"), [(8, "x;\n".to_string())]);
    assert_eq!(
        anchor("What sluice answers, and why"),
        "what-sluice-answers-and-why"
    );
    assert_eq!(
        anchor(" `-T` and nginx + proxy_connect"),
        "-t-and-nginx--proxy_connect"
    );
}
