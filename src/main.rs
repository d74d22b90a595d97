//! The `sluice` command: read the configuration, bind the listeners, serve until told to stop.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use sluice::config::{Config, EMBEDDED_NAME};
use sluice::server::Proxy;

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
    run(config)
}

/// `-t`: the same report as `nginx -t`, on standard error.
fn test_config(config: Result<Config, sluice::config::ConfigError>, shown: &str) -> ExitCode {
    // As nginx -t does, the log files are opened (and created) too.
    let config = config.and_then(|config| {
        sluice::access_log::open_files(&config).map_err(sluice::config::ConfigError::whole_file)?;
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

fn run(config: Config) -> ExitCode {
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
        let proxy = match Proxy::bind(&config) {
            Ok(proxy) => proxy,
            Err(error) => {
                eprintln!("sluice: [emerg] {error}");
                return ExitCode::FAILURE;
            }
        };
        observability(&proxy, &config);
        for (addr, origin) in proxy.listening() {
            log::info!("listening on {addr} (listen in {origin})");
        }
        let mut signals = Signals::new();
        let first = signals.next();
        let draining = proxy
            .serve(async { log::info!("{} received: no longer accepting", first.await) })
            .await;
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
                signal = signals.next() => log::info!("{signal} received again: exiting now"),
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

/// SIGUSR1 reopens the access logs; the status listener's address is logged. Runs inside the
/// runtime, before the proxy is announced, so that SIGUSR1 never finds its default action
/// (ending the process).
fn observability(proxy: &Proxy, config: &Config) {
    if let Err(error) = sluice::access_log::reopen_on_sigusr1() {
        log::warn!("cannot handle SIGUSR1, so access logs cannot be reopened: {error}");
    }
    if let (Some(addr), Some(status)) = (proxy.status_addr(), &config.status_listen) {
        log::info!(
            "serving /metrics and /healthz on {addr} (status_listen in {})",
            status.origin
        );
    }
}

/// SIGTERM and SIGINT, the signals that stop sluice.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next stop signal's name.
    async fn next(&mut self) -> &'static str {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.term) => "SIGTERM",
            () = recv(&mut self.int) => "SIGINT",
        }
    }
}
