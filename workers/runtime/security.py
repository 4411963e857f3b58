"""NATS accounts: one user per worker role, each allowed only the subjects it needs.

A role publishes only the events of its own stage (`voice.*.*.<stage>.>`: any endpoint, any
conversation; the mic also binds conversations, `endpoint.>`) and `control.error`
(any stage may fail a turn; only the speaker may also publish `control.interrupt`), and
dead letters (`dlq.*`). It may provision the VOICE and VOICE_DLQ streams and pull from
consumers of VOICE, but not delete or purge anything; it subscribes only to `_INBOX.>`
(where pull consumers deliver), never to voice subjects directly. `cli` is the operator
(CLIs, demo, benchmarks, purge): everything.

Reading is not restricted per role: a JetStream pull consumer reads through the API, and
durable names carry instance ids, which subject wildcards (whole tokens only) cannot match.

Passwords come from NATS_PASSWORD_<ROLE> when set, else from a file generated on first use,
DATA_DIR/nats/credentials.env (mode 0600, one `NATS_PASSWORD_<ROLE>=...` line per role).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import Any

ROLES = ("recorder", "mic", "stt", "llm", "tts", "speaker", "cli")
OPERATOR = "cli"
#: Stages whose events a role publishes (besides control.error).
PUBLISHES: dict[str, tuple[str, ...]] = {
    "recorder": (),
    "mic": ("mic", "endpoint"),
    "stt": ("stt",),
    "llm": ("llm",),
    "tts": ("tts",),
    "speaker": ("speaker",),
}
#: Roles that may stop a reply (barge-in); the operator may too.
INTERRUPTS = ("speaker",)
#: Roles that follow a claimed utterance or reply with an ephemeral (ordered) consumer.
EPHEMERAL_CONSUMERS = ("stt", "tts", "speaker")
DLQ_STREAM = "VOICE_DLQ"


def role_of(worker_id: str) -> str:
    """ "stt-2" -> "stt"; anything that is not a worker role is the operator."""
    base = re.sub(r"-\d+$", "", worker_id or "")
    return base if base in ROLES else OPERATOR


def password_env(role: str) -> str:
    return f"NATS_PASSWORD_{role.upper()}"


def credentials_file(data_dir: Path) -> Path:
    return Path(data_dir) / "nats" / "credentials.env"


def read_credentials(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            m = re.fullmatch(r"NATS_PASSWORD_([A-Z]+)", key.strip())
            if sep and m and m.group(1).lower() in ROLES and value.strip():
                out[m.group(1).lower()] = value.strip()
    return out


def load_or_create(path: Path) -> dict[str, str]:
    """Every role's password: from the file, which is created (0600) if missing."""
    have = read_credentials(path)
    if all(r in have for r in ROLES):
        return have
    existed = bool(have) or path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        have.setdefault(role, secrets.token_urlsafe(24))
    text = "".join(f"{password_env(r)}={have[r]}\n" for r in ROLES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if existed:  # a role was added: keep the old passwords, add the new one
        os.replace(tmp, path)
        return read_credentials(path)
    try:
        # link, not rename: when two processes race on first start, the first file wins.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return read_credentials(path)


def passwords(data_dir: Path, create: bool = True) -> dict[str, str]:
    """Role -> password; NATS_PASSWORD_<ROLE> in the environment wins over the file."""
    path = credentials_file(data_dir)
    base = load_or_create(path) if create else read_credentials(path)
    for role in ROLES:
        if os.environ.get(password_env(role)):
            base[role] = os.environ[password_env(role)]
    return base


def permissions(role: str, stream: str = "VOICE") -> dict[str, list[str]]:
    """`{"publish": [...], "subscribe": [...]}` allowed to a role."""
    if role == OPERATOR:
        return {"publish": [">"], "subscribe": [">"]}
    if role not in PUBLISHES:
        raise ValueError(f"unknown NATS role {role!r}: one of {', '.join(ROLES)}")
    api = "$JS.API"
    pub = [f"voice.*.*.{stage}.>" for stage in PUBLISHES[role]]
    pub.append("voice.*.*.control.error")
    if role in INTERRUPTS:
        pub.append("voice.*.*.control.interrupt")
    # Subject wildcards match whole tokens only, and durable names carry instance ids
    # ("llm-control-llm-2"), so consumers and dead letters are not restricted by name.
    pub.append("dlq.*")
    pub.append(f"{api}.INFO")
    for s in (stream, DLQ_STREAM):  # every worker provisions the streams at start
        pub += [f"{api}.STREAM.INFO.{s}", f"{api}.STREAM.CREATE.{s}", f"{api}.STREAM.UPDATE.{s}"]
    pub.append(f"{api}.STREAM.NAMES")
    # Workers look up the last event of a subject (get_last_msg), e.g. a turn's interrupt.
    pub += [
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
    ]
    pub += [
        f"{api}.CONSUMER.CREATE.{stream}.*",
        f"{api}.CONSUMER.CREATE.{stream}.*.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
    ]
    if role in EPHEMERAL_CONSUMERS:
        pub += [
            f"{api}.CONSUMER.CREATE.{stream}",
            f"{api}.CONSUMER.DELETE.{stream}.*",
            f"$JS.FC.{stream}.>",
        ]
    return {"publish": pub, "subscribe": ["_INBOX.>"]}


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization_block(passwords: dict[str, str] | None, stream: str = "VOICE") -> str:
    """The nats-server `authorization {}` block for every role.

    `passwords=None` writes `$NATS_PASSWORD_<ROLE>` references instead, which nats-server
    resolves from its environment (the shipped config).
    """
    users = []
    for role in ROLES:
        perms = permissions(role, stream)
        pub = ", ".join(_quote(s) for s in perms["publish"])
        sub = ", ".join(_quote(s) for s in perms["subscribe"])
        pw = "$" + password_env(role) if passwords is None else _quote(passwords[role])
        users.append(
            f"    {{ user: {_quote(role)}, password: {pw},\n"
            f"      permissions: {{ publish: {{ allow: [{pub}] }},"
            f" subscribe: {{ allow: [{sub}] }} }} }}"
        )
    return "authorization {\n  users: [\n" + ",\n".join(users) + "\n  ]\n}\n"


def _is_local(url: str) -> bool:
    from urllib.parse import urlparse

    hosts = [
        urlparse(u if "://" in u else f"nats://{u}").hostname or "127.0.0.1" for u in url.split(",")
    ]
    return all(host in ("127.0.0.1", "localhost", "::1") for host in hosts)


def credentials_of(settings: Any) -> tuple[str, str] | None:
    """(user, password) a process with these settings should use, or None to keep them.

    Explicit NATS_USER/NATS_PASSWORD are kept, except the project's own role credentials
    handed down by a parent process (same password as in the credentials file): those
    follow WORKER_ID, so a worker spawned by a CLI gets its role's rights, not the CLI's.
    """
    data_dir = Path(settings.data_dir)
    role = settings.nats_role or role_of(settings.worker_id)
    if settings.nats_user is not None:
        user = settings.nats_user
        ours = {read_credentials(credentials_file(data_dir)).get(user)}
        if user in ROLES:
            ours.add(os.environ.get(password_env(user)))
        if settings.nats_password is None or settings.nats_password not in ours:
            return None
        if settings.nats_user == role:
            return None
    env_pw = os.environ.get(password_env(role))
    if env_pw:
        return role, env_pw
    if not settings.nats_auth:
        return None
    pw = passwords(data_dir, create=_is_local(settings.nats_url)).get(role)
    return (role, pw) if pw else None


SHIPPED_HEADER = """\
# NATS for voicebus (docker-compose.nats.yml, or `nats-server -c ops/nats/nats.conf`).
# GENERATED by `python -m workers.runtime.security --shipped-config`: edit security.py.
#
# Loopback only. In Docker the compose file overrides the address (`-a 0.0.0.0`) inside
# the container and publishes the port on the host's 127.0.0.1 only.
# Passwords come from the environment: NATS_PASSWORD_<ROLE> for every role below
# (`python -m workers.runtime.security` creates data/nats/credentials.env with all of them;
# compose reads it with env_file). A missing variable makes nats-server refuse to start.
#
# JetStream fsyncs every second: NATS' default (2 minutes) acknowledges writes that a
# machine crash then loses. The SQL event log (fsynced per commit) is the system of record.
listen: 127.0.0.1:4223
server_name: voicebus
max_payload: 1MB
jetstream {
  store_dir: "/data/jetstream"
  sync_interval: "1s"
}
"""


def shipped_config(stream: str = "VOICE") -> str:
    return SHIPPED_HEADER + authorization_block(None, stream)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="workers.runtime.security",
        description="Create the NATS credentials file (if missing) and print its path.",
    )
    p.add_argument("--shipped-config", action="store_true", help="print ops/nats/nats.conf")
    p.add_argument("--permissions", action="store_true", help="print the role table")
    args = p.parse_args(argv)
    if args.shipped_config:
        sys.stdout.write(shipped_config())
        return 0
    if args.permissions:
        for role in ROLES:
            perms = permissions(role)
            print(f"{role}: publish {' '.join(perms['publish'])}")
            print(f"{' ' * len(role)}  subscribe {' '.join(perms['subscribe'])}")
        return 0
    from workers.runtime.config import get_settings

    path = credentials_file(get_settings().data_dir)
    load_or_create(path)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
