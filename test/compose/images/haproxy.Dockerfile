# Stand-in for the official `haproxy:<branch>` image, built from Debian's `haproxy`
# package on the local bookworm base (no registry here). Same layout as the official
# image: user `haproxy` moved to uid/gid 99 (Debian's adduser only makes 100-999),
# /usr/local/sbin/haproxy, /usr/local/etc/haproxy/haproxy.cfg, the `haproxy -W -db`
# entry point, SIGUSR1 as stop signal, running as the haproxy user.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/haproxy/haproxy.cfg \
 && groupmod --gid 99 haproxy \
 && usermod --uid 99 --gid 99 --home /var/lib/haproxy haproxy \
 && chown -R haproxy:haproxy /var/lib/haproxy \
 && ln -s /usr/sbin/haproxy /usr/local/sbin/haproxy \
 && mkdir -p /usr/local/etc/haproxy \
 && test "$(id -u haproxy):$(id -g haproxy)" = 99:99 \
 && haproxy -v
COPY haproxy-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
STOPSIGNAL SIGUSR1
ENTRYPOINT ["docker-entrypoint.sh"]
USER haproxy
WORKDIR /var/lib/haproxy
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
