# Stand-in for vllm/vllm-openai in the compose test, which needs an NVIDIA GPU: socat passes
# `vllm:8000` on the compose network on to the real vLLM CPU server the tests run on the host.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends socat \
 && rm -rf /var/lib/apt/lists/*
USER nobody
EXPOSE 8000
ENTRYPOINT ["socat"]
