# Stand-in for prom/prometheus in the compose test: Debian bookworm's prometheus (2.42), laid
# out as the upstream image is (entry point the binary, data under /prometheus, user nobody), so
# compose.yaml's command, config mount and volume work unchanged. Debian moved the default
# --storage.tsdb.path to /var/lib/prometheus/metrics2/: a link sends it to /prometheus.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nobody -g nogroup /prometheus \
 && rm -rf /var/lib/prometheus/metrics2 \
 && ln -s /prometheus /var/lib/prometheus/metrics2
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
