# Stand-in for quay.io/coreos/etcd: Debian's etcd-server and etcd-client (3.4) on the
# local bookworm base. Runs as root like the upstream image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server etcd-client \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && etcd --version && etcdctl version
ENV ETCDCTL_API=3
CMD ["etcd"]
