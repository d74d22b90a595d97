//! Walks the blocks of a parsed file into a [`Config`]: which module takes each directive at
//! each level, how `http` / `server` / `location` nest, and what a level inherits.
//!
//! A level starts as a copy of the level above (a server of its `http` block's settings, a
//! location of its server's forwarding and access log), and its own directives are applied
//! before any block inside it, wherever they stand in it: nginx's merging, in which a value
//! written lower wins. List directives replace the inherited list with their first entry of a
//! level (see [`Cx::first_in_level`]).

use std::time::Duration;

use super::{Config, Location, LocationMatch, Server, ignored, listen};
use crate::config::directive::{Context, Entry, MAIN, MAIN_HTTP, MANY, SERVER, Spec};
use crate::config::{ConfigError, Cx, Directive};
use crate::{
    access, access_log, connect, forward, http2, limits, parent, request, resolve, rewrite, route,
    status, transport, workers,
};

/// The blocks, which this file walks.
const BLOCKS: &[Spec] = &[
    Spec::block("http", MAIN, (0, 0)),
    Spec::block("server", MAIN_HTTP, (0, 0)),
    Spec::block("location", SERVER, (1, 2)),
    Spec::block("users", SERVER, (1, MANY)),
];

/// `shutdown_timeout`: how long open connections may finish once the process is told to stop.
const SHUTDOWN: &[Spec] = &[Spec::used("shutdown_timeout", MAIN_HTTP, (1, 1), true)];

/// Every directive sluice knows, by the module that declares it.
const REGISTRY: &[&[Spec]] = &[
    BLOCKS,
    SHUTDOWN,
    workers::DIRECTIVES,
    listen::DIRECTIVES,
    connect::DIRECTIVES,
    resolve::settings::DIRECTIVES,
    request::settings::DIRECTIVES,
    forward::settings::PASS_DIRECTIVES,
    forward::settings::PORT_DIRECTIVES,
    forward::settings::DIRECTIVES,
    access::settings::DIRECTIVES,
    limits::settings::PROCESS_DIRECTIVES,
    limits::settings::SERVER_DIRECTIVES,
    limits::settings::RATE_DIRECTIVES,
    access_log::settings::FORMAT_DIRECTIVES,
    access_log::settings::DIRECTIVES,
    status::settings::DIRECTIVES,
    transport::settings::DIRECTIVES,
    transport::tls::settings::DIRECTIVES,
    parent::settings::DIRECTIVES,
    route::DIRECTIVES,
    http2::settings::DIRECTIVES,
    http2::settings::OBSOLETE,
    rewrite::MAP_DIRECTIVES,
    rewrite::DIRECTIVES,
    rewrite::LUA_DIRECTIVES,
    ignored::DIRECTIVES,
];

/// Every directive sluice knows, in the order of `REGISTRY`: the manual lists them all.
pub fn directives() -> impl Iterator<Item = &'static Spec> {
    REGISTRY.iter().flat_map(|specs| specs.iter())
}

/// The process-wide directives, in the main context or `http`.
const PROCESS: &[Entry<Config>] = &[
    Entry {
        specs: limits::settings::PROCESS_DIRECTIVES,
        set: |cx, d, config| limits::settings::set(cx, d, &mut config.max_connections),
    },
    Entry {
        specs: SHUTDOWN,
        set: |cx, d, config| {
            config.shutdown_timeout = cx.time(d)?;
            Ok(())
        },
    },
    Entry {
        specs: workers::DIRECTIVES,
        set: |cx, d, config| workers::set(cx, d, &mut config.worker_processes),
    },
    Entry {
        specs: status::settings::DIRECTIVES,
        set: |cx, d, config| {
            status::settings::set(cx, d, &mut config.status_listen, &mut config.status_viewers)
        },
    },
    Entry {
        specs: access_log::settings::FORMAT_DIRECTIVES,
        set: |cx, d, _| access_log::settings::log_format(cx, d),
    },
];

/// The directives of a server, written in it or in its `http` block.
const SERVER_LEVEL: &[Entry<Server>] = &[
    Entry {
        specs: listen::DIRECTIVES,
        set: |cx, d, server| listen::set(cx, d, &mut server.listen),
    },
    Entry {
        specs: connect::DIRECTIVES,
        set: |cx, d, server| server.connect.set(cx, d),
    },
    Entry {
        specs: resolve::settings::DIRECTIVES,
        set: |cx, d, server| server.dns.set(cx, d),
    },
    Entry {
        specs: request::settings::DIRECTIVES,
        set: |cx, d, server| server.client.set(cx, d),
    },
    Entry {
        specs: forward::settings::PORT_DIRECTIVES,
        set: |cx, d, server| forward::settings::proxy_http_allow(cx, d, &mut server.http_ports),
    },
    Entry {
        specs: forward::settings::DIRECTIVES,
        set: |cx, d, server| server.forwarding.set(cx, d),
    },
    Entry {
        specs: access::settings::DIRECTIVES,
        set: |cx, d, server| server.access.set(cx, d),
    },
    Entry {
        specs: limits::settings::SERVER_DIRECTIVES,
        set: |cx, d, server| limits::settings::set(cx, d, &mut server.max_connections_per_client),
    },
    Entry {
        specs: limits::settings::RATE_DIRECTIVES,
        set: |cx, d, server| server.rates.set(cx, d),
    },
    Entry {
        specs: access_log::settings::DIRECTIVES,
        set: |cx, d, server| server.access_log.set(cx, d),
    },
    Entry {
        specs: transport::settings::DIRECTIVES,
        set: |cx, d, server| server.real_ip.set(cx, d),
    },
    Entry {
        specs: transport::tls::settings::DIRECTIVES,
        set: |cx, d, server| server.tls.set(cx, d),
    },
    Entry {
        specs: route::DIRECTIVES,
        set: |cx, d, server| server.routes.set(cx, d),
    },
    Entry {
        specs: http2::settings::DIRECTIVES,
        set: |cx, d, server| server.http2.set(cx, d),
    },
    Entry {
        specs: rewrite::MAP_DIRECTIVES,
        set: |cx, d, server| server.rewrite.set(cx, d),
    },
    Entry {
        specs: rewrite::DIRECTIVES,
        set: |cx, d, server| server.rewrite.set(cx, d),
    },
];

/// The directives of a location.
const LOCATION_LEVEL: &[Entry<Location>] = &[
    Entry {
        specs: forward::settings::PASS_DIRECTIVES,
        set: |cx, d, location| forward::settings::proxy_pass(cx, d, &mut location.proxy_pass),
    },
    Entry {
        specs: forward::settings::DIRECTIVES,
        set: |cx, d, location| location.forwarding.set(cx, d),
    },
    Entry {
        specs: access_log::settings::DIRECTIVES,
        set: |cx, d, location| location.access_log.set(cx, d),
    },
    Entry {
        specs: rewrite::DIRECTIVES,
        set: |cx, d, location| location.rewrite.set(cx, d),
    },
];

/// Builds the typed configuration from a parsed file.
pub fn build(tree: &[Directive], file: &str) -> Result<Config, ConfigError> {
    let mut cx = Cx::new(file, REGISTRY);
    let mut config = Config {
        file: file.to_string(),
        servers: Vec::new(),
        max_connections: None,
        shutdown_timeout: Duration::from_secs(30),
        worker_processes: None,
        status_listen: None,
        status_viewers: Default::default(),
        warnings: Vec::new(),
    };
    // The variables `set` and `map` declare, so any template may use them wherever they stand.
    rewrite::declare(tree, cx.state());
    // `log_format`s first, so an `access_log` may name a format wherever it is defined.
    let http_bodies = tree
        .iter()
        .filter(|d| d.name == "http")
        .filter_map(|d| d.block.as_deref());
    cx.dispatch_first(
        tree.iter().chain(http_bodies.clone().flatten()),
        PROCESS,
        &mut config,
    )?;
    // `parent` blocks next, so a `route` may name a parent wherever it is defined.
    for block in tree.iter().chain(http_bodies.flatten()) {
        if block.name == "parent" {
            parent::settings::define(&mut cx, block)?;
        }
    }
    let main_defaults = Server::defaults(cx.origin(1));
    for directive in cx.check(tree, Context::Main)? {
        match directive.name.as_str() {
            "server" => {
                let server = self::server(&mut cx, directive, &main_defaults)?;
                config.servers.push(server);
            }
            "http" => http(&mut cx, directive, &mut config)?,
            _ => cx.dispatch(directive, Context::Main, PROCESS, &mut config)?,
        }
    }
    if config.servers.is_empty() {
        return Err(ConfigError::whole_file(format!(
            "no \"server\" block in {file}: sluice needs at least one, with a \"listen\" directive"
        )));
    }
    listen::check_unique(&config.servers, file)?;
    if let Some(status) = &config.status_listen
        && let Some(listen) = config
            .servers
            .iter()
            .flat_map(|s| &s.listen)
            .find(|l| l.addr == status.addr && l.addr.port() != 0)
    {
        return Err(ConfigError::at(
            file,
            status.origin.line,
            format!(
                "status_listen {} is also a proxy listener (listen in {})",
                status.addr, listen.origin
            ),
        ));
    }
    config.warnings = cx.warnings;
    Ok(config)
}

/// `http { }`: settings here are the defaults of every server inside, wherever they appear
/// in the block (as in nginx, where merging happens after parsing).
fn http(cx: &mut Cx, http: &Directive, config: &mut Config) -> Result<(), ConfigError> {
    let body = http.block.as_deref().unwrap_or_default();
    let directives = cx.check(body, Context::Http)?;
    let mut defaults = Server::defaults(cx.origin(http.line));
    for directive in directives.iter().filter(|d| d.name != "server") {
        if Cx::declares(PROCESS, directive) {
            cx.dispatch(directive, Context::Http, PROCESS, config)?;
        } else {
            cx.dispatch(directive, Context::Http, SERVER_LEVEL, &mut defaults)?;
        }
    }
    for directive in directives.iter().filter(|d| d.name == "server") {
        let server = server(cx, directive, &defaults)?;
        config.servers.push(server);
    }
    Ok(())
}

fn server(cx: &mut Cx, block: &Directive, defaults: &Server) -> Result<Server, ConfigError> {
    let mut server = defaults.clone();
    server.origin = cx.origin(block.line);
    let body = block.block.as_deref().unwrap_or_default();
    let directives = cx.check(body, Context::Server)?;
    // Server-level settings first, wherever they stand: locations and users blocks inherit them.
    let nested = |d: &&&Directive| d.name == "location" || d.name == "users";
    for directive in directives.iter().filter(|d| !nested(d)) {
        cx.dispatch(directive, Context::Server, SERVER_LEVEL, &mut server)?;
    }
    let users: Vec<&Directive> = directives
        .iter()
        .copied()
        .filter(|d| d.name == "users")
        .collect();
    for directive in &users {
        let block = access::users::block(cx, directive, &server)?;
        server.users.push(block);
    }
    access::users::check(cx, &users, &server)?;
    for directive in directives.iter().filter(|d| d.name == "location") {
        let location = location(cx, directive, &server)?;
        if server
            .locations
            .iter()
            .any(|l| l.pattern == location.pattern)
        {
            let shown = directive
                .args
                .last()
                .map(String::as_str)
                .unwrap_or_default();
            return Err(cx.error(directive, format!("duplicate location \"{shown}\"")));
        }
        server.locations.push(location);
    }
    if let Some(missing) = server.access.incomplete() {
        return Err(cx.error(block, missing));
    }
    listen::warn_if_open(cx, &server);
    crate::limits::settings::warn_if_no_user_is_named(cx, block, &server);
    // Trusting every peer would let any client name its own address.
    if server.real_ip.trusted.is_empty()
        && let Some(listen) = server.listen.iter().find(|l| l.proxy_protocol)
    {
        return Err(ConfigError::at(
            &listen.origin.file,
            listen.origin.line,
            "\"proxy_protocol\" needs \"set_real_ip_from\" in the same server block or above it: \
             the balancers trusted to name the client (trusting everyone would let any client \
             choose its own address)",
        ));
    }
    // `listen ... http2` (nginx before 1.25.1) is `http2 on` for the block: an address
    // belongs to one block here, so the two cannot differ.
    server.http2.enabled |= server.listen.iter().any(|l| l.http2);
    if let Some(listen) = server.listen.iter().find(|l| l.ssl) {
        let origin = listen.origin.clone();
        server.tls.build(&origin, server.http2.enabled)?;
    }
    if server.listen.is_empty() {
        return Err(cx.error(
            block,
            "no \"listen\" directive in the \"server\" block (sluice needs an address to listen on)",
        ));
    }
    Ok(server)
}

fn location(cx: &mut Cx, block: &Directive, server: &Server) -> Result<Location, ConfigError> {
    let pattern = match block.args.as_slice() {
        [path] if path.starts_with('@') => {
            return Err(cx.error(block, "named locations are not supported"));
        }
        [path] => LocationMatch::Prefix(path.clone()),
        [modifier, path] if modifier == "^~" => LocationMatch::Prefix(path.clone()),
        [modifier, path] if modifier == "=" => LocationMatch::Exact(path.clone()),
        [modifier, _] if modifier == "~" || modifier == "~*" => {
            return Err(cx.error(block, "regular expression locations are not supported"));
        }
        _ => {
            return Err(cx.error(
                block,
                format!("invalid location modifier \"{}\"", block.args[0]),
            ));
        }
    };
    let mut location = Location {
        pattern,
        origin: cx.origin(block.line),
        proxy_pass: false,
        forwarding: server.forwarding.clone(),
        access_log: server.access_log.clone(),
        rewrite: Default::default(),
    };
    let body = block.block.as_deref().unwrap_or_default();
    for directive in cx.check(body, Context::Location)? {
        cx.dispatch(directive, Context::Location, LOCATION_LEVEL, &mut location)?;
    }
    Ok(location)
}
