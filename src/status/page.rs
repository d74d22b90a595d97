//! `/status`: the [`Report`] as one self-contained HTML page: no external asset, a few lines
//! of script that reload it every few seconds (a checkbox stops them). Every string a client
//! chose (host names, user names) is escaped.

use std::fmt::Write;

use super::view::{LIMIT, Report, Sort};

/// Seconds between reloads.
const REFRESH: u32 = 5;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em;margin:0 0 .3em}table{border-collapse:collapse}\
td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}\
th{background:#f3f3f3}td.n,th.n{text-align:right}.facts td{border:0;padding:.1em .8em .1em 0}\
th a{color:inherit}th.on{background:#dde8f5}form{margin:1em 0}input[type=text]{width:12em}\
.muted{color:#777}code{font-size:.95em}";

const SCRIPT: &str = "(function(){var box=document.getElementById('auto');\
box.checked=localStorage.getItem('sluice-status-auto')!=='off';\
box.onchange=function(){localStorage.setItem('sluice-status-auto',box.checked?'on':'off');};\
setInterval(function(){if(box.checked)location.reload();},REFRESH000);})();";

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(4096 + 600 * report.connections.len());
    let o = &mut out;
    let t = &report.totals;
    let loaded = &report.loaded;
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\">\
         <title>sluice status</title><style>{STYLE}</style></head><body>\
         <h1>sluice {}</h1><table class=facts>\
         <tr><td>up</td><td id=uptime>{}</td></tr>\
         <tr><td>configuration</td><td><code>{}</code>, loaded {} ago</td></tr>\
         <tr><td>listening on</td><td>{}</td></tr>\
         <tr><td>open now</td><td id=open>connections: {}, of which tunnels: {}</td></tr>\
         <tr><td>since start</td><td>connections: {}, tunnels: {}, requests: {}; \
         {} up, {} down (ended requests and tunnels)</td></tr></table>",
        escape(env!("CARGO_PKG_VERSION")),
        duration(report.uptime),
        escape(&loaded.file),
        duration(report.now - loaded.at),
        loaded
            .listeners
            .iter()
            .map(|l| format!("<code>{l}</code>"))
            .collect::<Vec<_>>()
            .join(", "),
        t.connections_open,
        t.tunnels_open,
        t.connections_accepted,
        t.tunnels_opened,
        t.requests,
        bytes(t.bytes_up),
        bytes(t.bytes_down),
    );
    let query = &report.query;
    let field = |name: &str, value: &Option<String>, hint: &str| {
        format!(
            "<label>{name} <input type=text name={name} value=\"{}\" placeholder=\"{hint}\"></label> ",
            escape(value.as_deref().unwrap_or_default())
        )
    };
    let _ = write!(
        o,
        "<form method=get action=status>{}{}{}\
         <input type=hidden name=sort value={}><button>filter</button> \
         <a href=\"status?sort={}\">clear</a> \
         <label class=muted><input type=checkbox id=auto checked> reload every {REFRESH} s</label> \
         <a class=muted href=\"status.json?{}\">JSON</a></form>",
        field("client", &query.client, "10.0.0.0/8"),
        field("user", &query.user, "name"),
        field("host", &query.host, "*.example.org"),
        query.sort.name(),
        query.sort.name(),
        escape(&query.with_sort(query.sort)),
    );
    let shown = report.connections.len();
    let _ = write!(
        o,
        "<p id=summary>{} open connection{} match{}",
        report.matched,
        if report.matched == 1 { "" } else { "s" },
        if report.matched == 1 { "es" } else { "" },
    );
    if report.matched > shown {
        let _ = write!(o, "; the first {LIMIT} by {} are shown", query.sort.name());
    }
    o.push_str(
        ".</p><table id=connections><thead><tr><th>client</th><th>user</th>\
                <th>destination</th><th>upstream</th><th>route</th><th>state</th>",
    );
    for (sort, title, class) in [
        (Sort::Age, "age", "n"),
        (Sort::Bytes, "bytes up", "n"),
        (Sort::Bytes, "bytes down", "n"),
        (Sort::Rate, "rate up", "n"),
        (Sort::Rate, "rate down", "n"),
    ] {
        let on = if sort == query.sort { " on" } else { "" };
        let _ = write!(
            o,
            "<th class=\"{class}{on}\"><a href=\"status?{}\">{title}</a></th>",
            escape(&query.with_sort(sort))
        );
    }
    o.push_str("</tr></thead><tbody>");
    for v in &report.connections {
        let d = &v.details;
        let dash = || "<span class=muted>-</span>".to_string();
        let text = |s: Option<&str>| s.map_or_else(dash, escape);
        let _ = write!(
            o,
            "<tr data-id={}><td class=client>{}</td><td class=user>{}</td>\
             <td class=destination>{}</td><td class=upstream>{}</td><td class=route>{}</td>\
             <td class=state>{}</td><td class=n>{}</td>\
             <td class=\"n up\" data-bytes={}>{}</td><td class=\"n down\" data-bytes={}>{}</td>\
             <td class=n>{}/s</td><td class=n>{}/s</td></tr>",
            v.id,
            escape(&v.client.to_string()),
            text(d.user.as_deref()),
            text(d.destination.as_deref()),
            text(d.upstream.map(|a| a.to_string()).as_deref()),
            text(d.route.as_ref().map(|r| r.name())),
            v.state.name(),
            duration(v.age.as_secs_f64()),
            v.bytes_up,
            bytes(v.bytes_up),
            v.bytes_down,
            bytes(v.bytes_down),
            bytes(v.rate_up as u64),
            bytes(v.rate_down as u64),
        );
    }
    let _ = writeln!(
        o,
        "</tbody></table><script>{}</script></body></html>",
        SCRIPT.replace("REFRESH", &REFRESH.to_string())
    );
    out
}

/// Text made safe inside an element and inside a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 MiB`; exact below 10 KiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 10 * 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `2d 3h`, `4m 05s`, `12.3s`.
fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    let whole = seconds as u64;
    match whole {
        0..60 => format!("{seconds:.1}s"),
        60..3600 => format!("{}m {:02}s", whole / 60, whole % 60),
        3600..86400 => format!("{}h {:02}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d {}h", whole / 86400, whole % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_units() {
        assert_eq!(
            escape("<img src=x onerror='a&b'>\""),
            "&lt;img src=x onerror=&#39;a&amp;b&#39;&gt;&quot;"
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(duration(3.25), "3.2s");
    }
}
