# sluice in a container (see docs/operations.md#containers):
#   docker build -t sluice .
#   docker run -d --name sluice -p 3128:3128 --stop-timeout 40 sluice
#   docker run -d --name sluice -p 3128:3128 -v /srv/sluice:/etc/sluice:ro sluice
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sluice
COPY --from=build /src/target/release/sluice /usr/bin/sluice
# Listens on 0.0.0.0:3128 for private-network clients; mount your own /etc/sluice to change it.
COPY dist/container.conf /etc/sluice/proxy.conf
USER sluice
EXPOSE 3128
# docker stop: SIGQUIT drains open tunnels for up to shutdown_timeout (30s); give
# --stop-timeout more than that, or docker sends SIGKILL after 10s.
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/bin/sluice"]
CMD ["-c", "/etc/sluice/proxy.conf"]
