//! The `sluice` command: read the configuration, bind the listeners, serve until told to stop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use sluice::server::Proxy;
use sluice::settings::{Config, EMBEDDED_DEFAULT, EMBEDDED_NAME};
use sluice::workers::Workers;

/// A forward proxy for HTTPS egress: CONNECT tunnels, configured in nginx syntax.
/// Without -c it listens on 127.0.0.1:3128 and tunnels to ports 443 and 563.
#[derive(FromArgs)]
struct Args {
    /// the configuration file (nginx syntax)
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,

    /// test the configuration and exit, as nginx -t does
    #[argh(switch, short = 't')]
    test: bool,

    /// test the configuration and print it, as nginx -T does
    #[argh(switch, short = 'T')]
    test_and_print: bool,

    /// print the manual page sluice(8) in roff and exit
    #[argh(switch, hidden_help)]
    man: bool,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.version {
        println!("{}", sluice::AGENT);
        return ExitCode::SUCCESS;
    }
    if args.man {
        print!("{}", sluice::manual::page());
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();

    let shown = args
        .config
        .as_ref()
        .map_or_else(|| EMBEDDED_NAME.to_string(), |p| p.display().to_string());
    // Read once, so that -T prints exactly the text it tested.
    let text = match &args.config {
        Some(path) => sluice::config::read(path, &shown),
        None => Ok(EMBEDDED_DEFAULT.as_bytes().to_vec()),
    };
    let config = text
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|text| Config::parse(text, &shown));
    if args.test || args.test_and_print {
        let code = test_config(config, &shown);
        if args.test_and_print && code == ExitCode::SUCCESS {
            print_config(&shown, &text.unwrap_or_default());
        }
        return code;
    }
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: [emerg] {error}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    run(config, args.config)
}

/// `-t`: the same report as `nginx -t`, on standard error.
fn test_config(config: Result<Config, sluice::config::ConfigError>, shown: &str) -> ExitCode {
    // As nginx -t does, the log files are opened (and created) too.
    let config = config.and_then(|config| {
        sluice::access_log::open_files(config.access_logs())
            .map_err(sluice::config::ConfigError::whole_file)?;
        Ok(config)
    });
    match config {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("sluice: [warn] {warning}");
            }
            eprintln!("sluice: the configuration file {shown} syntax is ok");
            eprintln!("sluice: configuration file {shown} test is successful");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sluice: [emerg] {error}");
            eprintln!("sluice: configuration file {shown} test failed");
            ExitCode::FAILURE
        }
    }
}

/// `-T`: the tested file, after the line nginx -T puts before each file.
fn print_config(shown: &str, text: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "# configuration file {shown}:");
    let _ = out.write_all(text);
    if !text.ends_with(b"\n") {
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
}

fn run(mut config: Config, path: Option<PathBuf>) -> ExitCode {
    match sluice::limits::raise_open_file_limit() {
        Ok(limit) => log::info!("open file limit: {limit}"),
        Err(error) => log::warn!("cannot read the open file limit: {error}"),
    }
    // Connections are served by the workers; this thread only handles signals, reloads and
    // the status listener.
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            Ok((
                runtime,
                Workers::start(Workers::count(config.worker_processes))?,
            ))
        });
    let (runtime, workers) = match started {
        Ok(started) => started,
        Err(error) => {
            eprintln!("sluice: [emerg] cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let spawner = workers.spawner();
    let running_workers = config.worker_processes;
    let code = runtime.block_on(async {
        // Before the first "listening on": no signal an nginx operator sends (HUP, USR1, USR2,
        // QUIT, WINCH) may kill sluice by its default action, even early.
        let mut signals = Signals::new();
        if let Err(error) = sluice::access_log::reopen_on_sigusr1() {
            log::warn!("cannot handle SIGUSR1, so access logs cannot be reopened: {error}");
        }
        let mut proxy = match Proxy::start_on(&config, spawner).await {
            Ok(proxy) => proxy,
            Err(error) => {
                eprintln!("sluice: [emerg] {error}");
                return ExitCode::FAILURE;
            }
        };
        // The status listener first: the "listening on" lines announce a proxy ready to use.
        log_status_listener(&proxy, &config);
        for (addr, origin) in proxy.listening() {
            log::info!("listening on {addr} (listen in {origin})");
        }
        let stop = loop {
            match signals.next().await {
                Signal::Reload => {
                    if let Some(reloaded) = reload(&mut proxy, path.as_deref()).await {
                        if reloaded.worker_processes != running_workers {
                            log::warn!(
                                "worker_processes changed: it takes effect at the next start, \
                                 not on reload"
                            );
                        }
                        config = reloaded;
                    }
                }
                Signal::Ignored(name, why) => log::warn!("{name} received and ignored: {why}"),
                Signal::Fast(name) => break Some(name),
                Signal::Graceful => break None,
            }
        };
        let draining = proxy.stop().await;
        match stop {
            Some(name) => {
                log::info!(
                    "{name} received: fast shutdown, closing {} open connections",
                    draining.open()
                );
                draining.close().await;
            }
            // Open tunnels and requests may finish, for up to shutdown_timeout; SIGTERM or
            // SIGINT meanwhile ends the wait at once.
            None if draining.open() > 0 => {
                log::info!(
                    "SIGQUIT received: graceful shutdown, no longer accepting; waiting up to {:?} \
                     for {} open connections (shutdown_timeout)",
                    config.shutdown_timeout,
                    draining.open()
                );
                tokio::select! {
                    () = draining.finished() => log::info!("all connections finished"),
                    () = tokio::time::sleep(config.shutdown_timeout) => {
                        log::info!("shutdown_timeout passed: closing {} connections", draining.open());
                        draining.close().await;
                    }
                    name = signals.next_fast() => {
                        log::info!("{name} received: closing {} connections now", draining.open());
                        draining.close().await;
                    }
                }
            }
            None => log::info!("SIGQUIT received: graceful shutdown, no connections open"),
        }
        ExitCode::SUCCESS
    });
    // Connections still open are dropped here; a bcrypt check in flight is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    workers.stop();
    // Every access log line queued so far reaches its file.
    sluice::access_log::shutdown();
    code
}

/// `SIGHUP`: reads the configuration file again and, if it is valid and its listeners can be
/// bound, serves it to new connections. Otherwise the running configuration stays and the
/// reason is logged with its `file:line`. Returns the configuration now served.
async fn reload(proxy: &mut Proxy, path: Option<&Path>) -> Option<Config> {
    let Some(path) = path else {
        log::info!("SIGHUP received: running the embedded configuration, nothing to reload");
        return None;
    };
    log::info!("SIGHUP received: reloading {}", path.display());
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(error) => {
            log::error!("reload failed, still serving the previous configuration: {error}");
            return None;
        }
    };
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    match proxy.reload(&config).await {
        Ok(changes) => {
            for addr in &changes.opened {
                let origin = proxy
                    .listening()
                    .find_map(|(bound, origin)| (bound == *addr).then_some(origin));
                match origin {
                    Some(origin) => log::info!("listening on {addr} (listen in {origin})"),
                    None => log::info!("listening on {addr}"),
                }
            }
            for addr in &changes.closed {
                log::info!("no longer listening on {addr}");
            }
            log_status_listener(proxy, &config);
            log::info!(
                "reloaded {}: new connections and the next request of open ones use it; open tunnels keep the previous one",
                path.display()
            );
            Some(config)
        }
        Err(error) => {
            log::error!("reload failed, still serving the previous configuration: {error}");
            None
        }
    }
}

/// Logs where `/metrics` and `/healthz` are served, if anywhere.
fn log_status_listener(proxy: &Proxy, config: &Config) {
    if let (Some(addr), Some(status)) = (proxy.status_addr(), &config.status_listen) {
        log::info!(
            "serving /metrics, /healthz and /status on {addr} (status_listen in {})",
            status.origin
        );
    }
}

/// What a signal asks of sluice, as the same signal asks nginx.
enum Signal {
    /// `SIGTERM` or `SIGINT`, by name: fast shutdown, every connection closed now.
    Fast(&'static str),
    /// `SIGQUIT`: graceful shutdown, open connections may finish.
    Graceful,
    /// `SIGHUP`.
    Reload,
    /// A signal nginx acts on that sluice has no use for, by name, and why.
    Ignored(&'static str, &'static str),
}

/// The signals sluice acts on (`SIGUSR1`, reopening the access logs, is handled by the access
/// log itself). Each is caught, so that none ends the process by its default action.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    quit: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    usr2: Option<tokio::signal::unix::Signal>,
    winch: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            quit: signal(SignalKind::quit()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
            usr2: signal(SignalKind::user_defined2()).ok(),
            winch: signal(SignalKind::window_change()).ok(),
        }
    }

    /// The next signal.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            () = recv(&mut self.term) => Signal::Fast("SIGTERM"),
            () = recv(&mut self.int) => Signal::Fast("SIGINT"),
            () = recv(&mut self.quit) => Signal::Graceful,
            () = recv(&mut self.hup) => Signal::Reload,
            () = recv(&mut self.usr2) => Signal::Ignored(
                "SIGUSR2",
                "sluice does not upgrade its binary in place; restart it instead",
            ),
            () = recv(&mut self.winch) => Signal::Ignored(
                "SIGWINCH",
                "sluice has no worker processes to stop",
            ),
        }
    }

    /// The next fast-shutdown signal's name; any other signal meanwhile is ignored.
    async fn next_fast(&mut self) -> &'static str {
        loop {
            if let Signal::Fast(name) = self.next().await {
                return name;
            }
        }
    }
}

/// Waits for `signal`, or forever if it could not be installed.
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
