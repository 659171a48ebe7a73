# syntax=docker/dockerfile:1
#
# Switchboard container image.
#   docker build -t switchboard .
#   docker run --rm -p 5060:5060/udp -p 5060:5060/tcp -p 5061:5061 -p 8443:8443 switchboard
# Config: ./switchboard.yaml in the working directory (/var/lib/switchboard),
# or pass `serve --config /path/to/file.yaml`. TLS material goes to certs/
# (a self-signed certificate is generated there when it is missing).

# ---------------------------------------------------------------------------
# The softphone (web/): npm ci + esbuild in a node stage. The Rust stage embeds
# the result (build.rs reads SWITCHBOARD_WEB_DIST instead of running node).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN node build.mjs --outdir /web/dist

# ---------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopus-dev pkg-config cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# 1. Dependencies only: build a dummy crate with the real manifest and lock
#    file so this layer is reused until Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. The real sources. COPY keeps the files' original mtimes, which can be
#    older than the dummy build: drop the crate's own fingerprints and touch
#    the sources so cargo rebuilds it (otherwise the dummy binary would ship).
#    The built front end comes from the node stage (embedded by build.rs).
COPY build.rs ./
COPY src ./src
COPY --from=web /web/dist /web-dist
ENV SWITCHBOARD_WEB_DIST=/web-dist
RUN rm -rf target/release/.fingerprint/switchboard-* \
 && find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/switchboard /out/switchboard

# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libopus0 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system switchboard \
 && useradd --system --gid switchboard --home-dir /var/lib/switchboard \
      --shell /usr/sbin/nologin switchboard \
 && install -d -o switchboard -g switchboard -m 0750 \
      /var/lib/switchboard /var/lib/switchboard/certs /var/lib/switchboard/dialplans

COPY --from=builder /out/switchboard /usr/local/bin/switchboard
WORKDIR /var/lib/switchboard
USER switchboard

# SIP UDP/TCP, SIP TLS, HTTPS+WSS, HTTP+WS (development), STUN/TURN, TURN TLS
EXPOSE 5060/udp 5060/tcp 5061/tcp 8443/tcp 8080/tcp 3478/udp 3478/tcp 5349/tcp

ENTRYPOINT ["switchboard"]
CMD ["serve"]
