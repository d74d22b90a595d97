//! The `sluice` command: read the configuration, bind the listeners, serve until told to stop.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use sluice::server::Proxy;
use sluice::settings::{Config, EMBEDDED_NAME};

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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();

    let shown = args
        .config
        .as_ref()
        .map_or_else(|| EMBEDDED_NAME.to_string(), |p| p.display().to_string());
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::embedded()),
    };
    if args.test {
        return test_config(config, &shown);
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

fn run(mut config: Config, path: Option<PathBuf>) -> ExitCode {
    match sluice::limits::raise_open_file_limit() {
        Ok(limit) => log::info!("open file limit: {limit}"),
        Err(error) => log::warn!("cannot read the open file limit: {error}"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice: [emerg] cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        // Before the first "listening on": a SIGHUP or SIGUSR1 that arrives early must not
        // kill sluice (their default action).
        let mut signals = Signals::new();
        if let Err(error) = sluice::access_log::reopen_on_sigusr1() {
            log::warn!("cannot handle SIGUSR1, so access logs cannot be reopened: {error}");
        }
        let mut proxy = match Proxy::start(&config).await {
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
        loop {
            match signals.next().await {
                Signal::Reload => {
                    if let Some(reloaded) = reload(&mut proxy, path.as_deref()).await {
                        config = reloaded;
                    }
                }
                Signal::Stop(name) => {
                    log::info!("{name} received: no longer accepting");
                    break;
                }
            }
        }
        let draining = proxy.stop().await;
        // Open tunnels and requests may finish, for up to shutdown_timeout; a second signal
        // ends the wait at once.
        if draining.open() > 0 {
            log::info!(
                "waiting up to {:?} for {} open connections (shutdown_timeout)",
                config.shutdown_timeout,
                draining.open()
            );
            tokio::select! {
                () = draining.finished() => log::info!("all connections finished"),
                () = tokio::time::sleep(config.shutdown_timeout) => {
                    log::info!("shutdown_timeout passed: closing {} connections", draining.open());
                }
                signal = signals.next_stop() => log::info!("{signal} received again: exiting now"),
            }
        }
        ExitCode::SUCCESS
    });
    // Connections still open are dropped here; a bcrypt check in flight is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
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
                "reloaded {}: new connections use it; open connections keep the previous one",
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
            "serving /metrics and /healthz on {addr} (status_listen in {})",
            status.origin
        );
    }
}

/// What a signal asks of sluice.
enum Signal {
    /// `SIGTERM` or `SIGINT`, by name.
    Stop(&'static str),
    /// `SIGHUP`.
    Reload,
}

/// The signals sluice acts on: `SIGTERM` and `SIGINT` stop it, `SIGHUP` reloads.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next signal.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            () = recv(&mut self.term) => Signal::Stop("SIGTERM"),
            () = recv(&mut self.int) => Signal::Stop("SIGINT"),
            () = recv(&mut self.hup) => Signal::Reload,
        }
    }

    /// The next stop signal's name; a `SIGHUP` meanwhile is ignored.
    async fn next_stop(&mut self) -> &'static str {
        loop {
            if let Signal::Stop(name) = self.next().await {
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
