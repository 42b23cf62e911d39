#!/bin/sh
# Compose hands each secret over as a file, /run/secrets/NAME. Where NAME is an upper-case
# variable name (the `target:` of the secret in compose.yaml) it is the variable MLflow or Prefect
# reads it from: export it. On Kubernetes the secrets arrive as environment variables
# (secretKeyRef) and /run/secrets does not exist. Either way, refuse to start on a secret that is
# still the placeholder of its *.example template (or empty): a server started with a password
# everyone can read in the repository is worse than one that does not start.
# GLASSWORK_SECRETS_DIR moves the folder (for a test, or a runtime that mounts secrets elsewhere).
set -eu
secrets_dir=${GLASSWORK_SECRETS_DIR:-/run/secrets}

refuse_placeholder() {  # NAME VALUE WHERE
    case "$2" in
        "" | *[Rr][Ee][Pp][Ll][Aa][Cc][Ee]-[Mm][Ee]* | *:)
            echo "glasswork-entrypoint: $1 ($3) is empty or still the placeholder of its .example file;" \
                "write a real secret first, e.g. openssl rand -hex 32 (README, \"Run Glasswork for a team\")" >&2
            exit 78  # EX_CONFIG
            ;;
    esac
}

if [ -d "$secrets_dir" ]; then
    for file in "$secrets_dir"/*; do
        [ -f "$file" ] || continue
        name=$(basename "$file")
        value=$(cat "$file")
        refuse_placeholder "$name" "$value" "secret file $file"
        case "$name" in
            [!A-Z_]* | *[!A-Z0-9_]*) continue ;;  # not a variable of ours: read by path
        esac
        export "$name=$value"
    done
fi

# Secrets passed as variables (Kubernetes): every variable named like one.
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
    case "$name" in
        *PASSWORD* | *SECRET* | *TOKEN* | *AUTH_STRING* | *API_KEY*)
            eval "value=\${$name-}"
            refuse_placeholder "$name" "$value" "environment variable"
            ;;
    esac
done
exec "$@"
