# Stand-in for python:3.11-slim, which no image registry here can give: Debian bookworm's own
# Python 3.11 on the debootstrapped bookworm base (tests/deploy/docker_engine.py builds both).
# docker/Dockerfile is built on it with --build-arg PYTHON_IMAGE=<this image>.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
 && rm -rf /var/lib/apt/lists/*
# The host's certificate authorities, so pip in a build trusts what the host trusts (here a
# TLS-intercepting proxy), as a company's base image does. Only this stand-in carries them: the
# project's images add nothing of the kind.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
