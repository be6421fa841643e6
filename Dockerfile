# syntax=docker/dockerfile:1
#
# haproxy-updater sidecar image.
#
#   docker build -t haproxy-updater .
#   docker run --rm haproxy-updater --help
#
# Contents: Node LTS, the compiled updater (dist/) with production node_modules only,
# Debian bookworm's HAProxy 2.6 (the updater runs `haproxy -c` on every config it renders
# before it reloads; in `--haproxy managed` mode it also runs it), iptables (for
# `--reload-guard iptables`) and tini (PID 1: signal forwarding, zombie reaping).
#
# User: a non-root user with uid/gid 99, the same ids as the `haproxy` user of the official
# `haproxy` image. In the sidecar setup (see docker-compose.yml) both containers share a
# volume: HAProxy creates the master and admin sockets there and the updater must be able
# to connect to them (a unix socket needs write permission), while HAProxy must read the
# haproxy.cfg, maps and server-state file the updater writes. Same uid = no chmod games.
# Override with --build-arg APP_UID=... APP_GID=... to match another HAProxy image.
#
# `--reload-guard iptables` needs root and CAP_NET_ADMIN: run the container with
# `--user 0:0 --cap-add NET_ADMIN` (compose: `user: "0:0"` + `cap_add: [NET_ADMIN]`).
# As the default non-root user, use `--reload-guard none` (the default).

ARG NODE_IMAGE=node:22-bookworm-slim

# ---- build: compile TypeScript (typescript is a dev dependency) ------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# tsc only emits .js: copy any other file under src (templates, ...) beside it.
RUN npm run build \
 && cd src && find . -type f ! -name '*.ts' -exec cp --parents {} ../dist/ \;

# ---- deps: production node_modules only (tsx is a runtime dependency, kept) ------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force

# ---- runtime --------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ARG APP_UID=99
ARG APP_GID=99

# haproxy pinned to bookworm's 2.6 branch; hostname is used by the compose demo's
# registrars (`hostname -i`) and is listed so it never silently disappears.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      'haproxy=2.6.*' iptables tini hostname \
 && rm -rf /var/lib/apt/lists/* \
 && haproxy -v | head -n 1 | grep -q 'version 2\.6\.'

RUN groupadd --system --gid "${APP_GID}" updater \
 && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" \
      --home-dir /app --no-create-home --shell /usr/sbin/nologin updater \
 && mkdir -p /state /var/lib/haproxy-updater \
 && chown "${APP_UID}:${APP_GID}" /state /var/lib/haproxy-updater
# /state: mount point of the shared volume in docker-compose.yml. A fresh named volume
# takes the ownership of the image directory it is first mounted on, so it is writable
# by the updater (and by HAProxy, same uid). /var/lib/haproxy-updater: --state-dir default.

WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin

USER ${APP_UID}:${APP_GID}

ENTRYPOINT ["tini", "--", "node", "/app/bin/haproxy-updater.js"]
CMD ["run"]

# /healthz of `run` on its --listen address (HAPROXY_UPDATER_LISTEN, default
# 127.0.0.1:9180; a wildcard address is probed on loopback). Containers running other
# commands (render, register) should disable it (compose: `healthcheck: {disable: true}`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const a=process.env.HAPROXY_UPDATER_LISTEN||'127.0.0.1:9180';const m=/^\\[?(.*?)\\]?:(\\d+)$/.exec(a);let h=m?m[1]:'127.0.0.1';if(h===''||h==='0.0.0.0'||h==='*')h='127.0.0.1';if(h==='::')h='::1';fetch('http://'+(h.includes(':')?'['+h+']':h)+':'+(m?m[2]:'9180')+'/healthz',{signal:AbortSignal.timeout(3000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
