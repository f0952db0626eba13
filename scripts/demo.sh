#!/usr/bin/env bash
# `make demo`: a channel host in a local podman container, converged by site.yml, the
# sample package built, published and installed over HTTPS with a password by py-rattler;
# then a second release of it uploaded over HTTPS with an upload token, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=molecule/resources/podman-env.sh
source molecule/resources/podman-env.sh

container=condaport-demo
https_port=8443
http_port=8080
channel_url="https://localhost:${https_port}/main"
artifacts="$(pwd)/artifacts"
dist="${artifacts}/demo/dist"
upload_dist="${artifacts}/demo/upload"
ca="${artifacts}/ca/${container}.crt"
export CONDAPORT_DEMO_PASSWORD="${CONDAPORT_DEMO_PASSWORD:-demo-only-password}"
# inventories/demo reads both from here, so the demo and its inventory agree.
export CONDAPORT_DEMO_UPLOAD_TOKEN="${CONDAPORT_DEMO_UPLOAD_TOKEN:-demo-only-upload-token-0123456789}"

step() { printf '\n==> %s\n' "$*"; }

step "Channel host container ${container}"
if ! podman container exists "${container}"; then
  podman run -d --name "${container}" --hostname "${container}" \
    --systemd=always -p "127.0.0.1:${https_port}:${https_port}" -p "127.0.0.1:${http_port}:${http_port}" \
    localhost/condaport-debian-systemd:12 /lib/systemd/systemd >/dev/null
elif [[ "$(podman inspect -f '{{.State.Running}}' "${container}")" != "true" ]]; then
  podman start "${container}" >/dev/null
fi

step "Sample package (py-rattler-build)"
if ! compgen -G "${dist}/*.conda" >/dev/null; then
  python -m tests.support.build_sample "${dist}" 2>/dev/null
fi
ls -l "${dist}"

step "ansible-playbook site.yml (converge and publish)"
ansible-playbook -i inventories/demo/hosts.yml site.yml \
  -e "condaport_publish_source_dir=${dist}" -e "condaport_tls_ca_fetch_dir=${artifacts}/ca"

step "Install hello-condaport with py-rattler over HTTPS, password from an auth file"
auth_file="${artifacts}/demo/rattler-auth.json"
prefix="${artifacts}/demo/env"
rm -rf "${prefix}"
# The password travels in the environment, never as a process argument (ps shows those).
CONDAPORT_DEMO_PASSWORD="${CONDAPORT_DEMO_PASSWORD}" python - "${auth_file}" "${channel_url}" <<'PY'
import os
import sys
from pathlib import Path
from tests.support.client import write_auth_file
write_auth_file(Path(sys.argv[1]), sys.argv[2], "demo", os.environ["CONDAPORT_DEMO_PASSWORD"])
PY
RATTLER_AUTH_FILE="${auth_file}" SSL_CERT_FILE="${ca}" \
  env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE -u SSL_CERT_DIR \
  python tests/support/client.py install --channel "${channel_url}" --prefix "${prefix}" hello-condaport
echo "installed file: $(cat "${prefix}/share/hello-condaport/hello.txt")"

step "Publish hello-condaport 1.1.0 over HTTPS with an upload token (as templates/ do in CI)"
if ! compgen -G "${upload_dist}/*.conda" >/dev/null; then
  python -m tests.support.build_sample "${upload_dist}" 1.1.0 2>/dev/null >/dev/null
fi
package="$(compgen -G "${upload_dist}/*.conda" | head -n 1)"
upload_url="${channel_url}/noarch/$(basename "${package}")"
# The token goes to curl on stdin (printf is a shell builtin), never as an argument.
cat <<COMMAND
  printf 'header = "Authorization: Bearer %s"\\n' "\$CONDAPORT_DEMO_UPLOAD_TOKEN" |
    curl --config - --cacert ${ca} --upload-file ${package#"$(pwd)/"} \\
      ${upload_url}
COMMAND
answer="${artifacts}/demo/upload-answer.json"
status="$(printf 'header = "Authorization: Bearer %s"\n' "${CONDAPORT_DEMO_UPLOAD_TOKEN}" |
  curl --silent --show-error --config - --cacert "${ca}" --upload-file "${package}" \
    --output "${answer}" --write-out '%{http_code}' "${upload_url}")"
# 201 the first time; 200 ("unchanged") when the demo runs again.
echo "HTTP ${status}: $(cat "${answer}")"
case "${status}" in
  200 | 201) ;;
  *) echo "the upload was refused" >&2; exit 1 ;;
esac
# A cache of its own: the install above keeps the channel's repodata for its max-age.
rm -rf "${prefix}" "${artifacts}/demo/rattler-cache"
RATTLER_AUTH_FILE="${auth_file}" SSL_CERT_FILE="${ca}" RATTLER_CACHE_DIR="${artifacts}/demo/rattler-cache" \
  env -u REQUESTS_CA_BUNDLE -u CURL_CA_BUNDLE -u SSL_CERT_DIR \
  python tests/support/client.py install --channel "${channel_url}" --prefix "${prefix}" "hello-condaport==1.1.0"

cat <<USAGE

The channel is up.
  URL:         ${channel_url}
  user:        demo (password: \$CONDAPORT_DEMO_PASSWORD)
  CA to trust: ${ca}

A consumer machine: playbooks/clients.yml writes all of the below (inventory: README, Clients).

conda (a drop-in, ~/.config/conda/condarc.d/condaport.yml; credentials in ~/.netrc, never in the URL):
  conda config --add channels ${channel_url}
  ssl_verify: ${ca}
  ~/.netrc:   machine localhost login demo password <password>

pixi (trust the CA through the system store, not a global SSL_CERT_FILE: that would hide
conda-forge's roots):
  sudo cp ${ca} /usr/local/share/ca-certificates/condaport-demo.crt && sudo update-ca-certificates
  pixi config set --global tls-root-certs native
  pixi workspace channel add ${channel_url}
  pixi add hello-condaport

pixi, rattler, py-rattler credentials: the auth file pixi falls back to without a keyring
(the demo's own install used ${auth_file}; a password never goes into a command line):
  ~/.rattler/credentials.json: {"localhost": {"BasicHTTP": {"username": "demo", "password": "<password>"}}}

CI publishing over HTTPS with the upload token (\$CONDAPORT_DEMO_UPLOAD_TOKEN, channel main):
  pipelines to copy: templates/ (GitHub Actions, GitLab CI: rattler-build upload, curl -T as fallback)
  ARTIFACTORY_TOKEN=... SSL_CERT_FILE=${ca} \\
    rattler-build upload artifactory --url https://localhost:${https_port} --channel main pkg.conda

Remove it all with: make clean
USAGE
