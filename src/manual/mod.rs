//! The manual page sluice(8), in roff, as `sluice --man` prints it and the Debian package
//! installs it. Its directive table is built from the same [`Spec`]s the configuration is
//! checked against, and the one-line [`directives::HELP`] beside them, so it lists exactly the
//! directives sluice knows.
//!
//! [`Spec`]: crate::config::directive::Spec

pub mod directives;

use std::fmt::Write;

use crate::config::directive::{Context, MANY, Role, Spec};
use directives::help_for;

/// The whole page. Read it with `sluice --man | man -l -`.
pub fn page() -> String {
    let mut page = String::new();
    // tbl preprocesses the directive table; `man` reads this first line to run it.
    page.push_str("'\\\" t\n");
    let _ = writeln!(
        page,
        ".TH SLUICE 8 \"\" \"sluice {}\" \"System Administration\"",
        env!("CARGO_PKG_VERSION")
    );
    page.push_str(HEAD);
    directive_table(&mut page);
    ignored_and_refused(&mut page);
    page.push_str(TAIL);
    page
}

/// Everything before the directive table: name, synopsis, options, signals.
const HEAD: &str = r##".SH NAME
sluice \- forward proxy for HTTPS egress, configured in nginx syntax
.SH SYNOPSIS
.B sluice
.RB [ \-c
.IR file ]
.RB [ \-t " | " \-T ]
.br
.B sluice \-V
.SH DESCRIPTION
.B sluice
opens CONNECT tunnels and forwards plain-HTTP requests for the clients that point at it as
their HTTP proxy. It never looks inside a tunnel: there is no TLS interception.
.PP
Its configuration file uses nginx syntax and the directives of nginx and of the
proxy_connect module, so a
.B server
block written for nginx loads as it is. Directives that mean nothing to a forward proxy are
accepted with a warning; the ones sluice cannot honour are refused with the reason.
.PP
Without
.BR \-c ,
sluice runs its embedded default: a listener on 127.0.0.1:3128 for this machine only, CONNECT
to ports 443 and 563, plain-HTTP forwarding, and the system's DNS settings. Whatever the
configuration, loopback, link-local, multicast and cloud metadata addresses are refused as
destinations unless a destination_allow rule names them.
.PP
sluice stays in the foreground and logs to standard error.
.SH OPTIONS
.TP
.BI "\-c, \-\-config " file
Read the configuration from
.IR file .
Relative paths inside it are relative to its directory.
.TP
.B \-t, \-\-test
Test the configuration and exit, as
.B nginx \-t
does: the file is read and checked whole, and the access log files are opened (and created).
The result goes to standard error.
.TP
.B \-T, \-\-test\-and\-print
Test the configuration as
.B \-t
does and, if it is valid, print it on standard output after a line
.BI "# configuration file " name :
the file as written, or the embedded default without
.BR \-c .
.TP
.B \-V, \-\-version
Print the version and exit.
.TP
.B \-\-help
Print a summary of the options.
.SH SIGNALS
The signals nginx acts on mean the same to sluice.
.TP
.B SIGQUIT
Graceful stop: stop accepting, close idle keep-alive connections, let open tunnels and
requests finish for up to
.BR shutdown_timeout ,
then exit 0. A
.B SIGTERM
or
.B SIGINT
meanwhile ends the wait.
.TP
.BR SIGTERM ", " SIGINT
Fast stop: close every listener, connection and tunnel at once, write their access log lines,
exit 0.
.TP
.B SIGHUP
Reload: read the configuration file again. If it is valid and its new listeners can be bound,
new connections and the next request of open keep-alive connections use it; open tunnels are
left alone. Otherwise nothing changes and the reason is logged with its file:line.
.TP
.B SIGUSR1
Reopen the access log files (after logrotate moved them).
.TP
.BR SIGUSR2 ", " SIGWINCH
Logged and ignored: sluice does not upgrade its binary in place and has no worker processes.
.SH DIRECTIVES
The file is a list of directives
.RI ( "name arguments" ;)
and blocks
.RI ( "name arguments" " { ... }),"
with # comments and quoted strings. Contexts: main (the top level),
.BR http ,
.BR server ,
.BR location .
A setting in
.B http
is the default of its servers, and a forwarding setting in a
.B server
the default of its locations.
.PP
Times: 500ms, 30s, 5m, 1h, 1d, 1w, 1M, 1y and combinations such as 1m30s; a bare number is
seconds. Sizes: 512, 8k, 1m.
"##;

/// Everything after the directives: files, environment, exit status, examples.
const TAIL: &str = r##".SH FILES
.TP
.I /etc/sluice/proxy.conf
The configuration the systemd unit runs; as installed, the embedded default (loopback only).
.TP
.I /usr/lib/systemd/system/sluice.service
The systemd unit: checks the file before starting and reloading, stops gracefully with
SIGQUIT, runs as a dynamic user.
.TP
.I /var/log/sluice/
Where the unit lets sluice write access logs
.RB ( "access_log /var/log/sluice/access.log;" ).
.TP
.I /etc/logrotate.d/sluice
Rotates /var/log/sluice/*.log and sends SIGUSR1.
.TP
.I /usr/share/doc/sluice/
The README, the reference in docs/, and proxy.conf.example with every directive and its
default.
.SH ENVIRONMENT
.TP
.B RUST_LOG
The level of sluice's own log on standard error: error, warn, info (the default) or debug
(one line per request and tunnel).
.SH EXIT STATUS
.TP
.B 0
The configuration is valid
.RB ( \-t ", " \-T ),
or sluice stopped on a signal.
.TP
.B 1
The configuration is invalid (the reason names its file:line), a listener could not be bound,
or the command line was wrong.
.SH EXAMPLES
.nf
sluice \-t \-c /etc/sluice/proxy.conf
sluice \-T \-c /etc/sluice/proxy.conf
curl \-x http://127.0.0.1:3128 https://example.org/
export https_proxy=http://127.0.0.1:3128 http_proxy=http://127.0.0.1:3128
systemctl reload sluice
.fi
.SH SEE ALSO
.BR nginx (8),
.BR curl (1),
.BR systemd.service (5),
.BR logrotate (8)
"##;

/// One row per directive sluice uses (name, contexts, argument count, default), each followed
/// by a row with its syntax and meaning.
fn directive_table(page: &mut String) {
    page.push_str(".SS Directives\n.TS\nlB lB lB lB.\n");
    page.push_str("Directive\tContexts\tArgs\tDefault\n_\n");
    for spec in crate::settings::directives().filter(|s| matches!(s.role, Role::Used)) {
        let (syntax, default, meaning) = match help_for(spec.name) {
            Some(help) => (help.syntax, help.default, help.meaning),
            None => ("", "", "(no description)"),
        };
        // Each directive: a row of its facts, then its syntax and meaning across the table.
        page.push_str(".T&\nlB l l l\nl s s s.\n");
        let _ = writeln!(
            page,
            "{}\t{}\t{}\t{}",
            roff(spec.name),
            contexts(spec),
            arguments(spec),
            roff(default),
        );
        let _ = writeln!(
            page,
            "T{{\n\\h'2n'\\fI{}\\fR \\(em {}\nT}}",
            roff(format!("{} {}", spec.name, syntax).trim_end()),
            roff(meaning)
        );
    }
    page.push_str(".TE\n");
}

/// The nginx directives sluice accepts and ignores, or refuses, with the reason.
fn ignored_and_refused(page: &mut String) {
    page.push_str(".SS Accepted and ignored\nAccepted with one warning each, so that a pasted nginx block loads:\n");
    for spec in crate::settings::directives() {
        if let Role::Ignored(why) = spec.role {
            let _ = writeln!(page, ".TP\n.B {}\n{}.", roff(spec.name), roff(why));
        }
    }
    page.push_str(".SS Refused\n");
    for spec in crate::settings::directives() {
        if let Role::Unsupported(why) = spec.role {
            let _ = writeln!(
                page,
                ".TP\n.B {}\n{} {}.",
                roff(spec.name),
                roff(spec.name),
                roff(why)
            );
        }
    }
}

/// Where a directive may stand: its contexts, less the one it is refused in.
fn contexts(spec: &Spec) -> String {
    spec.contexts
        .iter()
        .filter(|c| spec.refused.is_none_or(|(refused, _)| refused != **c))
        .map(|c| match c {
            Context::Main => "main",
            Context::Http => "http",
            Context::Server => "server",
            Context::Location => "location",
            Context::Users => "users",
            Context::If => "if",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many arguments a directive takes, and whether it opens a block.
fn arguments(spec: &Spec) -> String {
    let count = match spec.args {
        (low, high) if low == high => low.to_string(),
        (low, MANY) => format!("{low}+"),
        (low, high) => format!("{low}-{high}"),
    };
    if spec.block {
        format!("{count} {{ }}")
    } else {
        count
    }
}

/// `text` safe to stand in a roff line or table cell: backslashes and hyphens escaped, and a
/// leading `.` or `'` kept from reading as a request.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_a_row_for_every_directive_sluice_knows() {
        let page = page();
        for spec in crate::settings::directives() {
            let row = match spec.role {
                Role::Used => format!("\n{}\t", roff(spec.name)),
                Role::Ignored(_) | Role::Unsupported(_) => format!("\n.B {}\n", roff(spec.name)),
            };
            assert!(page.contains(&row), "{} is not in the manual", spec.name);
        }
        assert!(!page.contains("(no description)"));
    }

    #[test]
    fn text_cannot_start_a_roff_request() {
        assert_eq!(roff(".x"), "\\&.x");
        assert_eq!(roff("'x"), "\\&'x");
        assert_eq!(roff("a\\r-b"), "a\\er\\-b");
    }
}
