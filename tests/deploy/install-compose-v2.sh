#!/bin/sh
# Compose v2 for the docker test tier (tests/deploy), from Debian's own packages; run as root.
#
# Bookworm's `docker-compose` is Compose v1 (1.29): it rejects docker/compose.yaml (the top-level
# `name:`), and a v1 override cannot take the GPU reservation off the vllm service. Debian
# trixie's `docker-compose` is Compose v2, a Go binary whose only dependency is libc6 >= 2.34,
# so it installs on bookworm too; it brings `docker compose` (a CLI plugin) and `docker-compose`.
# It is fetched with a throwaway package list built from this machine's own Debian mirror, so
# the machine's apt sources and package cache stay as they were.
set -eu

if docker compose version 2>/dev/null | grep -Eq 'version v?2\.'; then
    exit 0
fi

mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' \
    | awk '$2 !~ /-(security|updates|backports)$/ { print $1; exit }')
if [ -z "$mirror" ]; then
    echo "install-compose-v2: no Debian mirror in this machine's apt sources" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt's download sandbox user must be able to write here
mkdir -p "$tmp/parts" "$tmp/lists/partial" "$tmp/cache/archives/partial"
echo "deb $mirror trixie main" > "$tmp/sources.list"
set -- -o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=$tmp/parts" \
       -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
apt-get "$@" -qq update
(cd "$tmp" && apt-get "$@" -qq download docker-compose)
chown -R root: "$tmp"
dpkg -i "$tmp"/docker-compose_*.deb
docker compose version
