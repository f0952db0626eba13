"""Proxy channels (roles/condaport_proxy, condaport_nginx): the rendered NGINX configuration
keeps the upstream credential in its root-only file and in the upstream's Authorization
alone, caches without credentials in the key, refreshes index files after the validity,
serves stale on upstream errors, and gives proxy channels no tree, index or uploads.

Rendered with Ansible's own templating from the roles' defaults and vars
(tests/support/render.py); molecule/edges checks the behaviour end to end.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from tests.support.render import Renderer, directives

PASSWORD = "upstream-s3cret-Pw"
USER = "mirror-robot"
CREDENTIAL = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
READ_TOKEN = "reader-token-0123456789abcdef"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> dict:
    ca = tmp_path_factory.mktemp("ca") / "upstream-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return {
        "condaport_auth_mode": "basic",
        "condaport_upload_auth_name": "condaport-upload",
        "condaport_upload_socket": "/run/condaport-upload.sock",
        "condaport_channels": [
            {"name": "main", "users": ["reader"], "uploaders": ["reader"]},
            {
                "name": "forge",
                "users": ["reader"],
                "upstream": "https://upstream.example:8443/conda-forge/",
                "upstream_user": USER,
                "upstream_password": PASSWORD,
                "upstream_ca": str(ca),
            },
            {"name": "open.mirror", "anonymous": True, "upstream": "https://conda.example/pub"},
        ],
        "condaport_nginx_users": [
            {"name": "reader", "password": "reader-password", "tokens": [READ_TOKEN]}
        ],
    }


@pytest.fixture(scope="module")
def renderer(inventory: dict) -> Renderer:
    roles = [
        "condaport",
        "condaport_tools",
        "condaport_upload",
        "condaport_nginx",
        "condaport_proxy",
    ]
    return Renderer(roles, inventory)


@pytest.fixture(scope="module")
def rendered(renderer: Renderer) -> dict[str, str]:
    """Every file a primary with these proxy channels gets, by a short name."""
    files = {
        "vhost": renderer.render("condaport_nginx", "etc/nginx/conf.d/condaport.conf.j2"),
        "upload-http": renderer.render(
            "condaport_nginx", "etc/nginx/conf.d/condaport-upload.conf.j2"
        ),
        "upload-server": renderer.render(
            "condaport_nginx", "etc/nginx/snippets/condaport-upload.conf.j2"
        ),
        "cache": renderer.render("condaport_nginx", "etc/nginx/snippets/condaport-cache.conf.j2"),
        "host-config": renderer.render("condaport_tools", "etc/condaport/condaport.json.j2"),
        "upload-rights": renderer.render("condaport_upload", "etc/condaport/upload.json.j2"),
    }
    for kind in ("http", "package", "index"):
        files[f"proxy-{kind}"] = renderer.render(
            "condaport_proxy", f"etc/nginx/condaport-proxy/{kind}.conf.j2"
        )
    for upstream in renderer.value("__condaport_proxy_upstreams"):
        files[f"channel-{upstream['name']}"] = renderer.render(
            "condaport_proxy",
            "etc/nginx/condaport-proxy/channel.conf.j2",
            __condaport_proxy_upstream=upstream,
        )
        files[f"page-{upstream['name']}"] = renderer.render(
            "condaport_proxy",
            "etc/nginx/condaport-proxy/page.html.j2",
            __condaport_proxy_upstream=upstream,
        )
    return files


def test_only_the_channels_root_only_file_holds_the_credential(
    rendered: dict[str, str],
) -> None:
    holders = [name for name, text in rendered.items() if PASSWORD in text or CREDENTIAL in text]
    assert holders == ["channel-forge"]


def test_the_cache_key_holds_no_credential_and_names_the_channel(
    rendered: dict[str, str],
) -> None:
    for name in ("forge", "open.mirror"):
        keys = [
            line for line in directives(rendered[f"channel-{name}"]) if "proxy_cache_key" in line
        ]
        assert len(keys) == 1
        assert PASSWORD not in keys[0] and CREDENTIAL not in keys[0] and USER not in keys[0]
        assert "$http_" not in keys[0] and "$remote_user" not in keys[0]
        assert keys[0].startswith(f'proxy_cache_key "{name} https://')
    assert 'proxy_cache_key "forge https://upstream.example:8443$condaport_proxy_uri";' in (
        directives(rendered["channel-forge"])
    )


def test_the_upstream_gets_the_channels_own_credential_only(rendered: dict[str, str]) -> None:
    forge = directives(rendered["channel-forge"])
    assert [line for line in forge if "Authorization" in line] == [
        f'proxy_set_header Authorization "Basic {CREDENTIAL}";'
    ]
    # Without upstream credentials, an empty Authorization: nothing is sent.
    assert [
        line for line in directives(rendered["channel-open.mirror"]) if "Authorization" in line
    ] == ['proxy_set_header Authorization "";']
    # No header of the client is passed on, and no proxied file names one.
    cache = directives(rendered["cache"])
    assert "proxy_pass_request_headers off;" in cache
    for name in ("cache", "channel-forge", "channel-open.mirror", "proxy-http"):
        assert not re.search(r"\$http_|\$remote_user|\$request_uri", rendered[name]), name
    # The upstream's own challenge does not reach clients.
    assert "proxy_hide_header WWW-Authenticate;" in cache
    # Upstream failures are not logged with the request line (a token URL's token).
    assert "error_log /var/log/nginx/error.log crit;" in cache


def test_each_channel_includes_its_own_upstream_file(rendered: dict[str, str]) -> None:
    vhost = rendered["vhost"]
    forge = vhost.split("    location /forge/ {", 1)[1].split("\n    location /", 1)[0]
    includes = {line for line in directives(forge) if line.startswith("include ")}
    assert "include /etc/nginx/condaport-proxy/channel-forge.conf;" in includes
    assert not any("channel-open.mirror" in line for line in includes)
    # A local channel still serves from disk.
    main = vhost.split("    location /main/ {", 1)[1].split("\n    location /", 1)[0]
    assert "try_files $uri =404;" in directives(main)
    assert "condaport-proxy" not in main


def test_the_upstream_is_verified(rendered: dict[str, str]) -> None:
    forge = directives(rendered["channel-forge"])
    assert "proxy_ssl_name upstream.example;" in forge
    assert "proxy_ssl_trusted_certificate /etc/nginx/condaport-proxy/channel-forge.ca.crt;" in forge
    # Without upstream_ca: the system's store.
    assert "proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;" in directives(
        rendered["channel-open.mirror"]
    )
    assert "proxy_ssl_verify on;" in directives(rendered["cache"])


def _location(vhost: str, opening: str) -> list[str]:
    """The directives of the location whose opening line starts with `opening`."""
    # The block starts at the end of the opening line (a regex there may hold braces).
    block = vhost.split(opening, 1)[1].split(" {\n", 1)[1].split("}", 1)[0]
    return directives(block)


def test_index_files_are_refreshed_after_the_validity(
    inventory: dict, rendered: dict[str, str]
) -> None:
    assert directives(rendered["proxy-index"]) == ["proxy_cache_valid 200 404 60s;"]
    assert directives(rendered["proxy-package"]) == ["proxy_cache_valid 200 31536000s;"]
    index = _location(rendered["vhost"], "location ~ ^/forge/(index\\.html|[")
    assert "include /etc/nginx/condaport-proxy/index.conf;" in index
    package = _location(
        rendered["vhost"],
        'location ~ "^/forge/[^./][^/]*/([^./][^/]*\\.(conda|tar\\.bz2)|shards/[0-9a-f]',
    )
    assert "include /etc/nginx/condaport-proxy/package.conf;" in package
    json = _location(rendered["vhost"], "location ~ ^/forge(?!.*/\\.)/.*\\.json$")
    assert "include /etc/nginx/condaport-proxy/index.conf;" in json
    # Anything else (channeldata.json...) is refreshed like an index file, never kept a year.
    outer = directives(
        rendered["vhost"].split("    location /forge/ {", 1)[1].split("        location", 1)[0]
    )
    assert "include /etc/nginx/condaport-proxy/index.conf;" in outer
    assert "include /etc/nginx/condaport-proxy/package.conf;" not in outer
    changed = Renderer(
        ["condaport", "condaport_proxy"], inventory | {"condaport_proxy_index_validity": 7}
    )
    text = changed.render("condaport_proxy", "etc/nginx/condaport-proxy/index.conf.j2")
    assert directives(text) == ["proxy_cache_valid 200 404 7s;"]


def test_stale_copies_are_served_while_the_upstream_fails(rendered: dict[str, str]) -> None:
    cache = directives(rendered["cache"])
    stale = next(line for line in cache if line.startswith("proxy_cache_use_stale "))
    conditions = set(stale.rstrip(";").split()[1:])
    assert {
        "error",
        "timeout",
        "updating",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
    } <= conditions
    assert "proxy_cache_revalidate on;" in cache
    assert "proxy_cache_lock on;" in cache
    # ... and say so.
    assert "add_header X-Condaport-Cache $upstream_cache_status always;" in cache


def test_only_conda_path_characters_reach_the_upstream(rendered: dict[str, str]) -> None:
    entry = next(
        line for line in directives(rendered["proxy-http"]) if line.startswith('"~^/forge(')
    )
    pattern, target = re.fullmatch(r'"~(.*)" "(.*)";', entry).groups()
    assert target == "/conda-forge$condaport_proxy_rest"
    regex = re.compile(pattern.replace("(?<", "(?P<"))
    assert regex.match("/forge/noarch/pkg-1.0-py_0.conda")
    assert regex.match("/forge/linux-64/repodata.json.zst")
    for hostile in ("/forge/noarch/a\r\nX-Injected: 1", "/forge/a b", "/forge/%0d", "/forgery/x"):
        assert not regex.match(hostile), hostile


def test_proxy_channels_have_no_tree_index_or_upload_rights(rendered: dict[str, str]) -> None:
    config = json.loads(rendered["host-config"])
    assert [c["name"] for c in config["channels"]] == ["main"]
    rights = json.loads(rendered["upload-rights"])
    assert list(rights["channels"]) == ["main"]


def test_uploads_to_a_proxy_channel_answer_405_with_a_reason(rendered: dict[str, str]) -> None:
    maps = directives(rendered["upload-http"])
    assert '"~^artifactory /forge/" "forge";' in maps
    assert '"~^quetz /api/channels/open\\.mirror/" "open.mirror";' in maps
    assert not any('"main"' in line for line in maps)
    server = rendered["upload-server"]
    # Refused before the generic upload rewrite could send it to the service.
    assert server.index("if ($condaport_upload_proxy_channel)") < server.index(
        "if ($condaport_upload_api)"
    )
    answer = directives(server.split("location ^~ /.condaport-upload-proxy/ {", 1)[1])
    assert answer[:2] == ["internal;", "default_type application/json;"]
    body = next(line for line in answer if line.startswith("return "))
    assert body.startswith("return 405 '")
    document = json.loads(body.split(" ", 2)[2].rstrip(";").strip("'").replace("\\n", ""))
    assert "takes no uploads" in document["error"] and document["status"] == 405


def test_edges_serve_proxy_channels_from_their_primary(inventory: dict) -> None:
    edge = Renderer(
        ["condaport", "condaport_nginx", "condaport_edge"],
        inventory | {"condaport_nginx_edge": True},
    )
    vhost = edge.render("condaport_nginx", "etc/nginx/conf.d/condaport.conf.j2")
    assert "condaport-proxy" not in vhost
    assert PASSWORD not in vhost and CREDENTIAL not in vhost


def test_the_root_only_file_is_where_the_role_writes_it() -> None:
    tasks = (
        Path(__file__).resolve().parents[2] / "roles/condaport_proxy/tasks/config.yml"
    ).read_text()
    block = tasks.split("- name: Render each proxy channel's upstream settings", 1)[1].split(
        "\n- name:", 1
    )[0]
    assert 'mode: "0600"' in block and "owner: root" in block and "no_log: true" in block


def test_the_browse_page_names_the_upstream_and_nothing_secret(rendered: dict[str, str]) -> None:
    page = rendered["page-forge"]
    assert page.startswith("<!--") and "<!doctype html>" in page
    assert "https://upstream.example:8443/conda-forge/" in page
    assert USER not in page and PASSWORD not in page and "<script" not in page
    assert "https://conda.example/pub/" in rendered["page-open.mirror"]


def test_the_browse_page_is_readable_by_nginx_and_retired_with_its_channel() -> None:
    tasks = (
        Path(__file__).resolve().parents[2] / "roles/condaport_proxy/tasks/config.yml"
    ).read_text()
    block = tasks.split("- name: Render each proxy channel's browse page", 1)[1].split(
        "\n- name:", 1
    )[0]
    assert 'mode: "0644"' in block and "channel-{{ __condaport_proxy_upstream.name }}.html" in block
    assert '"channel-*.html"' in tasks and "'.html'" in tasks
