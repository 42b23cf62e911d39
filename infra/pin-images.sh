#!/bin/sh
# Pin every image the infrastructure pulls to the digest its tag points at now, in place:
#   infra/pin-images.sh            # from the repository root, with docker buildx and network
# Each reference is written NAME:TAG@sha256:DIGEST. Until this has run they read
# NAME:TAG@sha256:run-infra-pin-images-sh, which docker refuses, so nothing starts unpinned.
# Running it again moves the pins to the tags' current digests: review the diff, rebuild, commit.
# (The digests are resolved here, not shipped: the machine this repository was written on could
# not reach a registry, and a digest that was not resolved is not a pin.) The image of the
# flow-run Jobs (work-pools/gpu-work-pool.json) is yours: put the digest `docker push` printed.
set -eu
root=${1:-$(dirname "$0")}
files="$root/Dockerfile $root/compose.yaml $root/k8s/worker-deployment.yaml"
refs=$(grep -ohE '[a-z0-9./-]+:[A-Za-z0-9._-]+@sha256:[A-Za-z0-9-]+' $files | sed 's/@.*//' | sort -u)
[ -n "$refs" ] || { echo "pin-images: no NAME:TAG@sha256:... reference in $files" >&2; exit 1; }
for ref in $refs; do
    # The digest of what the tag names (for a multi-platform image, its index).
    digest=$(docker buildx imagetools inspect "$ref" --format '{{.Manifest.Digest}}')
    if ! printf '%s\n' "$digest" | grep -qxE 'sha256:[0-9a-f]{64}'; then
        echo "pin-images: no digest for $ref (got: $digest)" >&2
        exit 1
    fi
    for file in $files; do
        sed -i "s#$ref@sha256:[A-Za-z0-9-]*#$ref@$digest#g" "$file"
    done
    echo "$ref@$digest"
done
