"""Render the roles' templates with Ansible's own templating engine, offline.

The unit tests of rendered configuration (NGINX snippets, the host config) use it: the
variables come from the roles' defaults/main.yml and vars/main.yml files, loaded as
Ansible loads them (trusted templates, evaluated lazily), then the test's inventory
values on top, as extra variables would be. Filters and tests are Ansible's, so a
template renders here exactly as on a host.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible.utils.vars import combine_vars

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"


def scratch_host_paths(prefix: Path) -> dict[str, str]:
    """Inventory values that put everything a channel host keeps in /etc, /run and /var
    (auth files, trees, staging, certificate and key, sockets, logs, snippets) into the
    scratch folder `prefix`, for a throwaway NGINX that touches no system path."""
    return {
        "condaport_auth_dir": str(prefix / "auth"),
        "condaport_channels_root": str(prefix / "local"),
        "condaport_staging_root": str(prefix / "staging"),
        "condaport_server_certificate_path": str(prefix / "cert.pem"),
        "condaport_server_key_path": str(prefix / "key.pem"),
        "condaport_upload_socket": str(prefix / "run/upload.sock"),
        "condaport_nginx_cache_snippet": str(prefix / "cache.conf"),
        "__condaport_nginx_access_log": str(prefix / "access.log"),
        "__condaport_nginx_downloads_log": str(prefix / "downloads.log"),
        "__condaport_nginx_downloads_public": str(prefix / "public"),
        "__condaport_nginx_error_log": str(prefix / "error.log"),
        "__condaport_nginx_run_dir": str(prefix / "run"),
        "__condaport_nginx_upload_server_conf": str(prefix / "upload-server.conf"),
    }


class Renderer:
    """The variables a play applying `roles` would see, and templates rendered with them."""

    def __init__(self, roles: list[str], inventory: Mapping[str, Any]) -> None:
        self._loader = DataLoader()
        variables: dict[str, Any] = {"ansible_managed": "Ansible managed (unit test)"}
        for role in roles:
            for kind in ("defaults", "vars"):
                path = ROLES / role / kind / "main.yml"
                if path.exists():
                    loaded = self._loader.load_from_file(str(path), trusted_as_template=True)
                    variables = combine_vars(variables, loaded or {})
        self.variables = combine_vars(variables, dict(inventory))

    def value(self, name: str, **extra: Any) -> Any:
        """One variable, fully evaluated."""
        return self._templar(extra).template(trust_as_template("{{ " + name + " }}"))

    def render(self, role: str, template: str, **extra: Any) -> str:
        """roles/<role>/templates/<template>, as the template module writes it."""
        source = (ROLES / role / "templates" / template).read_text()
        return self._templar(extra).template(
            trust_as_template(source), escape_backslashes=False, preserve_trailing_newlines=True
        )

    def _templar(self, extra: Mapping[str, Any]) -> Templar:
        return Templar(loader=self._loader, variables=combine_vars(self.variables, dict(extra)))


def directives(text: str) -> list[str]:
    """NGINX configuration lines, stripped, without comment lines and blank lines."""
    stripped = (line.strip() for line in text.splitlines())
    return [line for line in stripped if line and not line.startswith("#")]
