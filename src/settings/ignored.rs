//! nginx directives that a pasted `server` block may carry but that mean nothing to a forward
//! proxy: accepted with a warning so the file loads. And the ones refused outright, because
//! ignoring them would run something other than what the operator wrote.

use crate::config::directive::Spec;

pub const DIRECTIVES: &[Spec] = &[
    Spec::ignored("events", true, "sluice sizes its own event loop"),
    Spec::ignored("root", false, "a forward proxy serves no files"),
    Spec::ignored("index", false, "a forward proxy serves no files"),
    Spec::ignored(
        "server_name",
        false,
        "a forward proxy is chosen by its listen address, not by name",
    ),
    Spec::ignored(
        "worker_rlimit_nofile",
        false,
        "sluice raises its own file limit",
    ),
    Spec::ignored("user", false, "run sluice as the user it should be"),
    Spec::ignored("pid", false, "sluice runs in the foreground"),
    Spec::ignored("daemon", false, "sluice runs in the foreground"),
    Spec::ignored("master_process", false, "sluice is one process"),
    Spec::ignored(
        "error_log",
        false,
        "sluice logs to standard error; RUST_LOG sets the level",
    ),
    Spec::ignored("sendfile", false, "a forward proxy serves no files"),
    Spec::ignored("tcp_nopush", false, "a forward proxy serves no files"),
    Spec::ignored("tcp_nodelay", false, "sluice always sets TCP_NODELAY"),
    Spec::ignored("proxy_buffering", false, "sluice always streams bodies"),
    Spec::ignored(
        "proxy_request_buffering",
        false,
        "sluice always streams bodies",
    ),
    Spec::unsupported(
        "include",
        "is not supported yet; put everything in one file",
    ),
];
