"""The Docker engine of the docker test tier, and the stand-in images it builds on.

`docker_engine()` uses the engine that answers, or starts Debian's `dockerd` (the `docker.io`
package, which `make system-deps` installs) and stops it afterwards. Builds use Docker's classic
builder: BuildKit would fetch the `# syntax=` frontend of docker/Dockerfile from an image
registry, and none is reachable here.

No registry can give us `python:3.11-slim`, `redis` or `prom/prometheus` either, so the tests
build stand-ins from Debian's own packages: a bookworm base made by `debootstrap --variant=minbase`
and `docker import`ed once per machine (kept by its tag), and on it the small images under
standin/, each named `textgen-standin/...` so nobody takes one for the upstream image. Docker's
layer cache makes rebuilding them a matter of seconds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

STANDIN = Path(__file__).resolve().parent / "standin"
# Bump the suffix when the recipe below changes: the base is rebuilt only when its tag is missing.
STANDIN_DEBIAN = "textgen-standin/debian:bookworm-1"
STANDIN_TAG = "bookworm"
# Classic builder (see above); compose v2 takes the same switch.
BUILD_ENV = {"DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}


class DockerUnavailable(RuntimeError):
    """No Docker engine here and none could be started."""


class Docker:
    """The `docker` command line against one engine."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 stdin: int | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, **BUILD_ENV, **(env or {})}, cwd=cwd, stdin=stdin,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def answers(self) -> bool:
        return self("version", "--format", "{{.Server.Version}}", timeout=20,
                    check=False).returncode == 0

    def has_image(self, tag: str) -> bool:
        return self("image", "inspect", tag, timeout=30, check=False).returncode == 0

    def inspect(self, name: str, template: str) -> str:
        return self("inspect", "--format", template, name, timeout=30).stdout.strip()

    def build(self, tag: str, dockerfile: Path, context: Path, *,
              build_args: dict[str, str] | None = None, timeout: float = 600) -> None:
        args = ["build", "--file", str(dockerfile), "--tag", tag]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        self(*args, str(context), timeout=timeout)

    def has_compose_v2(self) -> bool:
        version = self("compose", "version", "--short", timeout=20, check=False).stdout
        return version.strip().lstrip("v").startswith("2.")

    def bridge_gateway(self) -> str:
        """The host's address on Docker's default bridge: `host-gateway` in a container."""
        return self.inspect("bridge", "{{(index .IPAM.Config 0).Gateway}}")


@contextlib.contextmanager
def docker_engine(log: Path) -> Iterator[Docker]:
    """A Docker engine that answers: the running one, else a `dockerd` of ours, stopped after."""
    binary = shutil.which("docker")
    if binary is None:
        raise DockerUnavailable("the docker command is missing: `make system-deps` installs "
                                "Debian's docker.io")
    docker = Docker(binary)
    if docker.answers():
        yield docker  # somebody else's engine: leave it as it was
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        raise DockerUnavailable("no Docker engine answers and this user cannot start dockerd "
                                "(root and Debian's docker.io are needed)")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen([dockerd], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not docker.answers():
            if process.poll() is not None and not docker.answers():
                raise DockerUnavailable(f"dockerd exited ({process.returncode}):\n"
                                        f"{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise DockerUnavailable(f"dockerd did not answer in 60 s:\n"
                                        f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield docker
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # dockerd stops its containerd with it
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def debian_base(docker: Docker) -> str:
    """The debootstrapped bookworm image, built once per machine and kept by its tag."""
    if docker.has_image(STANDIN_DEBIAN):
        return STANDIN_DEBIAN
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise DockerUnavailable("debootstrap is missing: `make system-deps` installs it")
    with tempfile.TemporaryDirectory(prefix="textgen-standin-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run([debootstrap, "--variant=minbase", "bookworm", str(root)],
                       check=True, capture_output=True, timeout=600)
        # As Debian's official images do: no service starts inside a build, no kept .debs.
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            docker("import", "--change", 'CMD ["bash"]', "-", STANDIN_DEBIAN,
                   stdin=tar.stdout.fileno() if tar.stdout else None, timeout=300)
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait(60)
    return STANDIN_DEBIAN


def standin(docker: Docker, name: str) -> str:
    """Build (layer cache: seconds when nothing changed) and return `textgen-standin/<name>`."""
    tag = f"textgen-standin/{name}:{STANDIN_TAG}"
    base = debian_base(docker)
    previous = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="textgen-standin-") as tmp:
        context = Path(tmp)
        dockerfile = context / "Dockerfile"
        shutil.copyfile(STANDIN / f"{name}.Dockerfile", dockerfile)
        if name == "python":
            shutil.copyfile(host_ca_bundle(), context / "ca-certificates.crt")
        docker.build(tag, dockerfile, context, build_args={"BASE": base}, timeout=600)
    if previous and previous != docker.inspect(tag, "{{.Id}}"):
        docker("rmi", previous, check=False)  # the stand-in of an older recipe
    return tag


def host_ca_bundle() -> Path:
    found = ssl.get_default_verify_paths().cafile or os.environ.get("SSL_CERT_FILE")
    for candidate in (found, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise DockerUnavailable("no CA bundle on this host for the Python stand-in's pip")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listed(api: str, token: str, model: str, still_running: Callable[[], str | None],
                timeout: float = 120) -> None:
    """Until the API in a container lists `model` (its first discovery round went through).

    `still_running` returns why the container is not running (its logs), or None while it is.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (stopped := still_running()) is not None:
            raise RuntimeError(f"the API stopped before it listed {model}:\n{stopped}")
        try:
            listed = httpx.get(f"{api}/v1/models", timeout=2,
                               headers={"Authorization": f"Bearer {token}"}).json()
            if model in [m["id"] for m in listed["data"]]:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the API did not list {model} in {timeout:.0f} s")
