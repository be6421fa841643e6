#
# haproxy-updater sidecar image.
#
#   docker build -t haproxy-updater .                                # HAProxy 3.2 LTS
#   docker build --build-arg HAPROXY_BRANCH=3.0 -t haproxy-updater . # another branch
#   docker run --rm haproxy-updater --help
#
# The runtime stage is the official `haproxy:<branch>` image itself, with Node added: the
# updater runs `haproxy -c` on every config it renders before it reloads, and that check is
# only worth something when it is made by the same HAProxy as the one that will run the
# config. Keep HAPROXY_BRANCH equal to the branch of the `haproxy` service beside it
# (docker-compose.yml passes the same variable to both).
#
# Contents: the HAProxy binary of the chosen branch, Node (the binary only, from
# NODE_IMAGE), the compiled updater (dist/) with production node_modules only (no npm,
# no TypeScript, no tsx: tsx only serves checkouts that run src/ directly), iptables (for
# `--reload-guard iptables`) and tini (PID 1: signal forwarding, zombie reaping).
#
# User: uid/gid 99, the `haproxy` user of the official image. In the sidecar setup (see
# docker-compose.yml) both containers share a volume: HAProxy creates the master and admin
# sockets there and the updater must be able to connect to them (a unix socket needs write
# permission), while HAProxy must read the haproxy.cfg, maps and server-state file the
# updater writes. Same uid = no chmod games.
# Override with --build-arg APP_UID=... APP_GID=... to match another HAProxy image.
#
# `--reload-guard iptables` needs root and CAP_NET_ADMIN: run the container with
# `--user 0:0 --cap-add NET_ADMIN` (compose: `user: "0:0"` + `cap_add: [NET_ADMIN]`).
# As the default non-root user, use `--reload-guard none` (the default).
#
# Only the classic Dockerfile syntax is used (no BuildKit frontend to pull), so the image
# also builds where no registry is reachable once the two base images are present
# (test/compose/run.sh builds local stand-ins and passes them as NODE_IMAGE/HAPROXY_IMAGE).

ARG NODE_IMAGE=node:22-bookworm-slim
ARG HAPROXY_BRANCH=3.2
ARG HAPROXY_IMAGE=haproxy:${HAPROXY_BRANCH}

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

# ---- deps: production node_modules only ----------------------------------------------
# tsx is a dependency for checkouts (bin/ runs src/*.ts through it when src/ exists); the
# image ships no src/, so bin/ loads dist/ and tsx (with esbuild, ~10 MB) is dropped.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error \
 && npm uninstall --omit=dev --no-audit --no-fund --loglevel=error tsx \
 && test ! -e node_modules/tsx && test ! -e node_modules/esbuild \
 && find node_modules -mindepth 1 -maxdepth 1 -type d -empty -delete \
 && npm cache clean --force

# ---- runtime: the HAProxy image + Node + the updater ---------------------------------
FROM ${HAPROXY_IMAGE}
ARG HAPROXY_BRANCH
ARG APP_UID=99
ARG APP_GID=99
USER root

# hostname is used by the compose demo's registrars (`hostname -i`) and is listed so it
# never silently disappears; openssl makes the default certificate `run --certs` pins first
# in its crt-list (HAProxy refuses an empty one). The HAProxy branch is checked so that a mismatched
# HAPROXY_IMAGE / HAPROXY_BRANCH pair fails the build instead of validating with the
# wrong version.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iptables tini hostname openssl \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && haproxy -v | head -n 1 | grep -q "version ${HAPROXY_BRANCH}\."

COPY --from=build /usr/local/bin/node /usr/local/bin/node

RUN mkdir -p /state /var/lib/haproxy-updater \
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
# Smoke test: every module of the CLI loads from dist/ with production dependencies only.
RUN node /app/bin/haproxy-updater.js --help >/dev/null

USER ${APP_UID}:${APP_GID}

# The HAProxy image's entry point would prepend `haproxy -W -db`: replace it.
ENTRYPOINT ["tini", "--", "node", "/app/bin/haproxy-updater.js"]
CMD ["run"]
# The HAProxy image stops with SIGUSR1 (graceful); the updater stops on SIGTERM.
STOPSIGNAL SIGTERM

# /healthz of `run` on its --listen address (HAPROXY_UPDATER_LISTEN, default
# 127.0.0.1:9180; a wildcard address is probed on loopback). Containers running other
# commands (render, register) should disable it (compose: `healthcheck: {disable: true}`).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const a=process.env.HAPROXY_UPDATER_LISTEN||'127.0.0.1:9180';const m=/^\\[?(.*?)\\]?:(\\d+)$/.exec(a);let h=m?m[1]:'127.0.0.1';if(h===''||h==='0.0.0.0'||h==='*')h='127.0.0.1';if(h==='::')h='::1';fetch('http://'+(h.includes(':')?'['+h+']':h)+':'+(m?m[2]:'9180')+'/healthz',{signal:AbortSignal.timeout(3000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
