//! The Grafana dashboard (`contrib/grafana/sluice.json`) is built on what sluice exports: every
//! metric named in every query is one a live `/metrics` scrape of the real binary carries, and
//! the panels the operators asked for are there.

mod common;

use std::collections::BTreeSet;

use common::json::Json;
use common::*;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/sluice.json");

fn dashboard() -> Json {
    Json::parse(&std::fs::read_to_string(DASHBOARD).expect("the dashboard is there"))
}

/// The metric names a PromQL expression uses: every `sluice_…` identifier.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sluice_") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if boundary {
            names.push(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    names
}

/// The sample names of a scrape (`name` of `name{labels} value`), histogram series included.
async fn exported() -> BTreeSet<String> {
    let proxy = Proxy::start(&format!("status_listen 127.0.0.1:0;\n{}", open_config("")));
    let status = proxy.status_addr();
    let response = exchange(
        status,
        format!("GET /metrics HTTP/1.1\r\nHost: {status}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.head);
    response
        .body
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_names_is_exported() {
    let exported = exported().await;
    let mut exprs = Vec::new();
    dashboard().strings_under("expr", &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut named = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "a query that names no sluice metric: {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which /metrics does not export \
                 (in \"{expr}\"); exported: {exported:?}"
            );
            named.insert(name);
        }
    }
    // The variable's query too.
    let mut definitions = Vec::new();
    dashboard().strings_under("definition", &mut definitions);
    for name in definitions.iter().flat_map(|d| metric_names(d)) {
        assert!(exported.contains(&name), "the variable queries {name}");
    }
    // What the panels are for: traffic, tunnels open, setup rate, errors by cause, DNS
    // latency, refusals by reason.
    for wanted in [
        "sluice_bytes_total",
        "sluice_tunnels_open",
        "sluice_tunnels_total",
        "sluice_connections_accepted_total",
        "sluice_upstream_connect_failures_total",
        "sluice_dns_failures_total",
        "sluice_dns_lookup_seconds_bucket",
        "sluice_refused_total",
    ] {
        assert!(named.contains(wanted), "no panel uses {wanted}");
    }
}

/// The check above would catch a misspelt metric: proven on a name that is not exported.
#[tokio::test]
async fn a_metric_that_is_not_exported_is_caught() {
    let exported = exported().await;
    let names = metric_names("sum(rate(sluice_tunnel_total[5m])) + sluice_tunnels_open");
    assert_eq!(names, ["sluice_tunnel_total", "sluice_tunnels_open"]);
    assert!(!exported.contains("sluice_tunnel_total"));
    assert!(exported.contains("sluice_tunnels_open"));
    assert!(metric_names("not_sluice_x").is_empty());
}

#[test]
fn every_panel_has_a_title_a_place_and_queries_a_prometheus() {
    let dashboard = dashboard();
    assert_eq!(dashboard.get("title").str(), Some("sluice"));
    for panel in dashboard.get("panels").array() {
        let title = panel.get("title").str().unwrap();
        assert!(!title.is_empty());
        let place = panel.get("gridPos");
        assert!(
            place.get("w").num() > 0.0 && place.get("h").num() > 0.0,
            "{title}"
        );
        if panel.get("type").str() == Some("row") {
            continue;
        }
        let targets = panel.get("targets").array();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(
                target.get("datasource").get("type").str(),
                Some("prometheus"),
                "{title}"
            );
        }
    }
}
