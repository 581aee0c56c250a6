#!/usr/bin/env bash
# Makes a container base image from Debian packages alone, for building the
# Dockerfile where no image registry can be reached:
#   bash scripts/container/debian_base.sh localhost/debian-python:bookworm
#   podman build --build-arg BASE_IMAGE=localhost/debian-python:bookworm ...
# Debian (default bookworm, whose python3 is 3.11) by debootstrap's minbase
# variant plus python3, python3-venv (the Dockerfile's /opt/venv) and passwd
# (useradd), without apt's package cache, lists and documentation, imported
# with `podman import`. Needs root, debootstrap and podman.
# Environment: PODMAN (the podman command with its global options, default
# "podman"), DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian).
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 IMAGE_TAG" >&2
  exit 2
fi
tag="$1"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
read -r -a podman <<< "${PODMAN:-podman}"
for tool in debootstrap "${podman[0]}"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$0: $tool is not installed" >&2; exit 1; }
done
root="$(mktemp -d "${TMPDIR:-/tmp}/debian-base.XXXXXX")"
cleanup() {
  # debootstrap mounts proc and sys inside; a failed run may leave them.
  local mount
  for mount in $(awk -v r="$root" 'index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$mount" || true
  done
  rm -rf "$root" "$root.log"
}
trap cleanup EXIT
debootstrap --variant=minbase --include=python3,python3-venv,passwd \
  "$suite" "$root" "$mirror" > "$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2
    echo "$0: debootstrap $suite from $mirror failed" >&2; exit 1; }
python="$(chroot "$root" python3 --version)"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -c . | "${podman[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" > /dev/null
echo "$tag: Debian $suite, $python"
