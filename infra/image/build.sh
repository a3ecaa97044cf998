#!/usr/bin/env bash
# Builds the edge service's OCI image (pec-edge: SMTP submission, IMAP, POP3) without Docker:
# the root file system by mmdebstrap from Debian bookworm (only libc6 and libgcc-s1, unpacked:
# no shell, no package manager, no maintainer scripts), our release binary and the CA bundle
# added, a non-root user; buildah turns it into one layer and writes an OCI archive.
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the last commit's time), so the
# same commit and the same Debian snapshot give the same root file system, byte for byte.
#
#   infra/image/build.sh [--out DIR]       (default DIR: .local/image)
#
# Writes DIR/rootfs.tar (what the image holds), DIR/pec-edge.oci.tar (oci-archive, tag
# pec-edge:<commit>) and DIR/image.env (IMAGE_ROOTFS_SHA256, IMAGE_DIGEST). Push with e.g.
#   skopeo copy oci-archive:DIR/pec-edge.oci.tar docker://<account>.dkr.ecr.<region>.amazonaws.com/pec-edge:<tag>
# and pass that URI as the template parameter EdgeImageUri.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source infra/local/lib.sh

out=".local/image"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    *) pec_die "unknown argument $1 (--out DIR)" ;;
  esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"

infra/local/install.sh image
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
commit="$(git rev-parse --short=12 HEAD)"

pec_log "building pec-edge (release)"
# The same cargo command as infra/package.sh (pec_release_build: every function and pec-edge, one
# feature resolution, one set of flags), so after packaging, as in infra/test.sh, nothing is built
# again.
triple="$(uname -m)-unknown-linux-gnu"
pec_release_build "$triple"
bin="target/$triple/release/pec-edge"
# The image's glibc is bookworm's (2.36): the binary must not need a newer one.
need="$(objdump -T "$bin" | sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' | sort -V | tail -1)"
[ "$(printf '%s\n2.36\n' "$need" | sort -V | tail -1)" = 2.36 ] \
  || pec_die "pec-edge needs glibc $need, newer than bookworm's 2.36"

# The CA bundle the AWS SDK's rustls client trusts (the build machine's Debian ca-certificates).
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || pec_die "$ca is missing (Debian package ca-certificates)"

pec_log "root file system (mmdebstrap, bookworm, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
rm -rf "$out/rootfs" "$out/rootfs.tar"
mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1 \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
  bookworm "$out/rootfs" http://deb.debian.org/debian
# What the image adds (mmdebstrap's extract variant runs no customize hooks): our binary, the CA
# bundle, a non-root user; what it drops: the package manager's traces, device nodes.
r="$out/rootfs"
rm -rf "$r/etc/apt" "$r/etc/dpkg" "$r/var/lib/apt" "$r/var/cache/apt" "$r/var/lib/dpkg" "$r/var/log" "$r/dev"
mkdir -p "$r/usr/local/bin" "$r/etc/ssl/certs" "$r/tmp" "$r/dev" "$r/proc" "$r/sys"
chmod 1777 "$r/tmp"
install -m 0755 "$bin" "$r/usr/local/bin/pec-edge"
install -m 0644 "$ca" "$r/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\npec:x:10001:10001:pec edge:/nonexistent:/usr/sbin/nologin\n' >"$r/etc/passwd"
printf 'root:x:0:\npec:x:10001:\n' >"$r/etc/group"
# A reproducible tar: sorted names, one time, numeric root ownership, no atime/ctime.
tar --create --file "$out/rootfs.tar" --directory "$r" --sort=name --format=pax \
  --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --owner=0 --group=0 --numeric-owner \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
rm -rf "$r"
rootfs_sha="$(sha256sum "$out/rootfs.tar" | cut -d' ' -f1)"
if tar -tf "$out/rootfs.tar" | grep -Eq '^\./(usr/)?bin/(ba|da)?sh$'; then
  pec_die "the root file system has a shell"
fi

pec_log "image (buildah, one layer, user 10001)"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
ctr="$(buildah from --quiet scratch)"
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$ctr" "$out/rootfs.tar" / >/dev/null
buildah config \
  --user 10001:10001 \
  --workingdir / \
  --entrypoint '["/usr/local/bin/pec-edge"]' \
  --cmd '' \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --env PEC_EDGE_SUBMISSION=0.0.0.0:2587 --env PEC_EDGE_IMAPS=0.0.0.0:2993 \
  --env PEC_EDGE_IMAP=0.0.0.0:2143 --env PEC_EDGE_POP3S=0.0.0.0:2995 \
  --port 2587 --port 2993 --port 2143 --port 2995 \
  --label org.opencontainers.image.title=pec-edge \
  --label org.opencontainers.image.revision="$(git rev-parse HEAD)" \
  --created-by "infra/image/build.sh" \
  "$ctr"
rm -f "$out/pec-edge.oci.tar"
buildah commit --quiet --timestamp "$SOURCE_DATE_EPOCH" --format oci "$ctr" \
  "oci-archive:$out/pec-edge.oci.tar:pec-edge:$commit" >/dev/null
digest="$(tar -xOf "$out/pec-edge.oci.tar" index.json | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')"
cat >"$out/image.env" <<EOF
IMAGE_ROOTFS_SHA256=$rootfs_sha
IMAGE_DIGEST=$digest
IMAGE_TAG=pec-edge:$commit
EOF
pec_log "rootfs sha256 $rootfs_sha ($(du -h "$out/rootfs.tar" | cut -f1))"
pec_log "image $out/pec-edge.oci.tar pec-edge:$commit $digest"
