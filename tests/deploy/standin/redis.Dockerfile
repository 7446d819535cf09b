# Stand-in for redis:7.4-alpine in the compose test: Debian bookworm's redis-server (7.0) and
# redis-cli. compose.yaml gives the command (maxmemory, policy, password) and the health check.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
