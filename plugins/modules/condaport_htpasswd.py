#!/usr/bin/python
"""Render an htpasswd file declaratively from a user list (condaport).

Why not community.general.htpasswd: it cannot set rounds (passlib's sha512_crypt default of
656,000 rounds makes NGINX, which checks the hash on every request, serve ~2 req/s), it
cannot notice a scheme change, and it manages one user per task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: condaport_htpasswd
short_description: Render an htpasswd file from a complete user list
description:
  - Writes every listed user with a hash of the requested scheme and rounds.
  - An entry is kept as it is when its hash verifies the password and already uses the
    requested scheme and rounds, so a second run changes nothing.
  - Users not listed are removed when O(exclusive=true).
  - The diff names users only, never hashes or passwords.
version_added: "0.1.0"
options:
  path:
    description: The htpasswd file. Its directory must exist.
    type: path
    required: true
  users:
    description: Every user that may authenticate.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: User name; no V(:), white space or control characters.
        type: str
        required: true
      password:
        description: The user's password.
        type: str
        required: true
  scheme:
    description: passlib scheme of new hashes.
    type: str
    default: sha512_crypt
    choices: [bcrypt, sha512_crypt, sha256_crypt, apr_md5_crypt]
  rounds:
    description:
      - Rounds (bcrypt cost). Omitted, the scheme's default here is used
        (bcrypt 12, sha512_crypt and sha256_crypt 5000); ignored for apr_md5_crypt.
    type: int
  exclusive:
    description: Remove users that are not listed.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
requirements:
  - passlib (Debian python3-passlib with python3-bcrypt, or pip libpass)
author:
  - condaport developers
"""

EXAMPLES = r"""
- name: Render the channel's htpasswd file
  condaport_htpasswd:
    path: /etc/nginx/condaport/users.htpasswd
    users:
      - name: alice
        password: "{{ vault_alice_password }}"
    scheme: sha512_crypt
    owner: root
    group: www-data
    mode: "0640"
  no_log: true
"""

RETURN = r"""
added:
  description: Users written for the first time.
  returned: always
  type: list
  elements: str
updated:
  description: Users whose hash was replaced (new password, scheme or rounds).
  returned: always
  type: list
  elements: str
removed:
  description: Users removed because they are no longer listed.
  returned: always
  type: list
  elements: str
unchanged:
  description: Users whose entry was kept as it was.
  returned: always
  type: list
  elements: str
"""

import os
import re
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from passlib import hash as passlib_hash

    PASSLIB_ERROR = None
except Exception:  # passlib 1.7.4 fails on import with bcrypt >= 4.1 in some set-ups
    passlib_hash = None
    PASSLIB_ERROR = traceback.format_exc()

# Scheme -> (passlib handler name, default rounds, min rounds, max rounds); None: no rounds.
SCHEMES = {
    "bcrypt": ("bcrypt", 12, 4, 31),
    "sha512_crypt": ("sha512_crypt", 5000, 1000, 999_999_999),
    "sha256_crypt": ("sha256_crypt", 5000, 1000, 999_999_999),
    "apr_md5_crypt": ("apr_md5_crypt", None, None, None),
}
# glibc crypt (and so NGINX) reads these bcrypt idents; passlib may also emit $2a$.
BCRYPT_IDENT = "2b"
NAME_RE = re.compile(r"^[^:\s\x00-\x1f\x7f]+$")


def read_entries(path: str) -> dict[str, str]:
    """Existing user -> hash, in file order; a missing file is an empty one."""
    entries: dict[str, str] = {}
    if not os.path.exists(path):
        return entries
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if ":" in line and not line.startswith("#"):
                name, hashed = line.split(":", 1)
                entries[name] = hashed
    return entries


def handler_for(scheme: str, rounds: int | None):
    """A passlib handler configured with the wanted rounds (and bcrypt ident)."""
    name, default_rounds, _, _ = SCHEMES[scheme]
    handler = getattr(passlib_hash, name)
    settings = {}
    if default_rounds is not None:
        settings["rounds"] = rounds if rounds is not None else default_rounds
    if scheme == "bcrypt":
        settings["ident"] = BCRYPT_IDENT
    return handler.using(**settings) if settings else handler


def is_current(handler, hashed: str, password: str) -> bool:
    """True when `hashed` is of the wanted scheme and rounds and verifies `password`."""
    try:
        if not handler.identify(hashed):
            return False
        if handler.needs_update(hashed):
            return False
        return bool(handler.verify(password, hashed))
    except (ValueError, TypeError):
        return False


def validate(module: AnsibleModule) -> None:
    params = module.params
    names = [user.get("name") or "" for user in params["users"]]
    for name in names:
        if not NAME_RE.match(name):
            module.fail_json(
                msg=f"user name {name!r} is invalid: it must be non-empty, without ':', "
                "white space or control characters"
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        module.fail_json(msg=f"users are listed twice: {', '.join(duplicates)}")
    empty = [user["name"] for user in params["users"] if not user.get("password")]
    if empty:
        module.fail_json(
            msg=f"empty password for {', '.join(empty)}"
            " (an unset vault variable is the usual cause)"
        )
    _, default_rounds, low, high = SCHEMES[params["scheme"]]
    rounds = params["rounds"]
    if rounds is not None and default_rounds is not None and not low <= rounds <= high:
        module.fail_json(msg=f"rounds {rounds} is outside {low}..{high} for {params['scheme']}")


def render(lines: list[tuple[str, str]]) -> str:
    return "".join(f"{name}:{hashed}\n" for name, hashed in lines)


def diff_view(names: list[str], updated: list[str]) -> str:
    """Usernames only; a marker where a hash changes. Never hashes."""
    return "".join(f"{n}{'  (hash renewed)' if n in updated else ''}\n" for n in names)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "users": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "password": {"type": "str", "required": True, "no_log": True},
                },
            },
            "scheme": {"type": "str", "default": "sha512_crypt", "choices": list(SCHEMES)},
            "rounds": {"type": "int"},
            "exclusive": {"type": "bool", "default": True},
        },
        add_file_common_args=True,
        supports_check_mode=True,
    )
    validate(module)
    params = module.params
    path = params["path"]
    names = [user["name"] for user in params["users"]]
    if module.check_mode and not os.path.exists(path):
        # --check on a new host: no file means every user is added, whatever the hashes;
        # neither passlib nor the folder need to exist yet.
        after = diff_view(names, [])
        diff = {"before_header": path, "after_header": path, "before": "", "after": after}
        module.exit_json(changed=True, diff=diff, added=names, updated=[], removed=[], unchanged=[])
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        module.fail_json(msg=f"the directory of {path} does not exist")
    if passlib_hash is None:
        module.fail_json(
            msg="passlib is not importable on the target: install Debian's python3-passlib and "
            "python3-bcrypt (or pip libpass)",
            exception=PASSLIB_ERROR,
        )
    handler = handler_for(params["scheme"], params["rounds"])
    try:
        handler.hash("backend probe")
    except Exception as exc:  # passlib raises MissingBackendError when bcrypt is absent
        module.fail_json(
            msg=f"passlib cannot hash {params['scheme']} on the target ({exc}); "
            "install Debian's python3-bcrypt (or pip bcrypt)"
        )

    existing = read_entries(path)
    result: dict[str, list[str]] = {"added": [], "updated": [], "removed": [], "unchanged": []}
    lines: list[tuple[str, str]] = []
    for user in params["users"]:
        name, password = user["name"], user["password"]
        current = existing.get(name)
        if current is not None and is_current(handler, current, password):
            lines.append((name, current))
            result["unchanged"].append(name)
            continue
        lines.append((name, handler.hash(password)))
        result["added" if current is None else "updated"].append(name)
    listed = {name for name, _ in lines}
    for name, hashed in existing.items():
        if name in listed:
            continue
        if params["exclusive"]:
            result["removed"].append(name)
        else:
            lines.append((name, hashed))
            result["unchanged"].append(name)

    content = render(lines)
    on_disk = render(list(existing.items())) if os.path.exists(path) else None
    changed = content != on_disk
    diff = {
        "before_header": path,
        "after_header": path,
        "before": diff_view(list(existing), []) if on_disk is not None else "",
        "after": diff_view([n for n, _ in lines], result["updated"]),
    }
    if changed and not module.check_mode:
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp_path = tempfile.mkstemp(prefix=".htpasswd-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            os.chmod(tmp_path, 0o600)
            module.atomic_move(tmp_path, path)
        finally:
            if os.path.exists(tmp_path):
                os.unlink(tmp_path)
    if os.path.exists(path):
        file_args = module.load_file_common_arguments(params)
        changed = module.set_fs_attributes_if_different(file_args, changed, diff=None)
    module.exit_json(changed=changed, diff=diff, **result)


if __name__ == "__main__":
    main()
