#!/bin/sh
# Compose hands each secret over as a file, /run/secrets/NAME, where NAME is the environment
# variable that MLflow or Prefect reads it from (the `target:` of the secret in compose.yaml).
# Export each one, then run the command. On Kubernetes the secrets arrive as environment
# variables (secretKeyRef) and /run/secrets does not exist, so this only runs the command.
set -eu
if [ -d /run/secrets ]; then
    for file in /run/secrets/*; do
        [ -f "$file" ] || continue
        name=$(basename "$file")
        case "$name" in
            [!A-Za-z_]* | *[!A-Za-z0-9_]*) continue ;;  # not a variable name: not ours
        esac
        value=$(cat "$file")
        export "$name=$value"
    done
fi
exec "$@"
