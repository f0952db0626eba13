"""What the client role puts in the rattler/pixi auth file, pixi's config and conda's drop-in.

Rendered by Ansible itself (the role's defaults, vars and templates, on localhost, nothing
written): the molecule `clients` scenario proves that py-rattler installs with these files;
this checks the rules for every mix of logins and tokens, which one scenario cannot hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "condaport_client"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def render(tmp_path: Path, settings: dict) -> dict:
    """The auth entries, the pixi config and the conda drop-in for `settings`."""
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(settings))
    out = tmp_path / "out.json"
    playbook = tmp_path / "render.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars_files": [
                        str(ROLE / "defaults" / "main.yml"),
                        str(ROLE / "vars" / "main.yml"),
                        str(settings_file),
                    ],
                    "tasks": [
                        {"ansible.builtin.include_tasks": str(ROLE / "tasks" / "preflight.yml")},
                        {
                            "ansible.builtin.copy": {
                                "dest": str(out),
                                "mode": "0600",
                                "content": "{{ {'auth': __condaport_client_auth_ours,"
                                " 'pixi': lookup('template', pixi_template),"
                                " 'condarc': lookup('template', condarc_template)} | to_json }}",
                            },
                            "vars": {
                                "pixi_template": str(ROLE / "templates/etc/pixi-config.toml.j2"),
                                "condarc_template": str(ROLE / "templates/home/condarc.j2"),
                            },
                        },
                    ],
                }
            ]
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = str(ROLE.parents[1] / "ansible.cfg")
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(done.stdout[-3000:])
    rendered = json.loads(out.read_text())
    return {
        "auth": rendered["auth"],
        "pixi": tomllib.loads(rendered["pixi"]),
        "condarc": yaml.safe_load(rendered["condarc"]),
    }


def test_logins_are_basic_and_a_token_only_host_gets_its_conda_token(tmp_path: Path) -> None:
    files = render(
        tmp_path,
        {
            "condaport_client_ca_certificate": "/controller/ca.crt",
            "condaport_client_channels": [
                {"url": "https://a.example:8443/main", "username": "alice", "password": "pw-1"},
                # A host with a login keeps it; its token channel works by its /t/ URL.
                {"url": "https://a.example:8443/other", "token": "tok-a-0123456789abc"},
                {"url": "https://b.example/main", "token": "tok-b-0123456789abc"},
                {"url": "https://b.example/more", "token": "tok-b-0123456789abc"},
                # Two tokens on one host: the file holds one entry per host, so none.
                {"url": "https://c.example/one", "token": "tok-c1-0123456789ab"},
                {"url": "https://c.example/two", "token": "tok-c2-0123456789ab"},
                {"url": "https://d.example/public"},
            ],
        },
    )
    assert files["auth"] == {
        "a.example": {"BasicHTTP": {"username": "alice", "password": "pw-1"}},
        "b.example": {"CondaToken": "tok-b-0123456789abc"},
    }
    assert files["condarc"] == {
        "channels": [
            "https://a.example:8443/main",
            "https://a.example:8443/t/tok-a-0123456789abc/other",
            "https://b.example/t/tok-b-0123456789abc/main",
            "https://b.example/t/tok-b-0123456789abc/more",
            "https://c.example/t/tok-c1-0123456789ab/one",
            "https://c.example/t/tok-c2-0123456789ab/two",
            "https://d.example/public",
        ],
        "ssl_verify": CA_BUNDLE,
    }
    assert files["pixi"] == {"tls-root-certs": "native"}


def test_pixi_mirrors_take_a_url_or_a_list(tmp_path: Path) -> None:
    files = render(
        tmp_path,
        {
            "condaport_client_channels": [{"url": "https://a.example/main"}],
            "condaport_client_pixi_mirrors": {
                "https://conda.anaconda.org/conda-forge": "https://a.example/conda-forge",
                "https://conda.anaconda.org/bioconda": [
                    "https://a.example/bioconda",
                    "https://b.example/bioconda",
                ],
            },
        },
    )
    # No private CA: pixi keeps its default roots.
    assert files["pixi"] == {
        "mirrors": {
            "https://conda.anaconda.org/bioconda": [
                "https://a.example/bioconda",
                "https://b.example/bioconda",
            ],
            "https://conda.anaconda.org/conda-forge": ["https://a.example/conda-forge"],
        }
    }
    assert files["auth"] == {}


@pytest.mark.parametrize(
    "mirrors",
    [
        {"https://conda.anaconda.org/conda-forge": "https://user:pw@a.example/conda-forge"},
        {"https://conda.anaconda.org/conda-forge": ['https://a.example/x"]\nevil = 1']},
        {"ftp://conda.anaconda.org/conda-forge": "https://a.example/conda-forge"},
    ],
)
def test_pixi_mirrors_with_credentials_or_quotes_are_refused(tmp_path: Path, mirrors) -> None:
    with pytest.raises(AssertionError, match="condaport_client_pixi_mirrors must map"):
        render(
            tmp_path,
            {
                "condaport_client_channels": [{"url": "https://a.example/main"}],
                "condaport_client_pixi_mirrors": mirrors,
            },
        )
