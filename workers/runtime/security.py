"""NATS accounts: one user per worker role, each allowed only the subjects it needs.

Writing. A role publishes only the events of its own stage (`voice.*.*.<stage>.>`; the mic
also binds conversations, `endpoint.>`, but never on an endpoint another endpoint role owns)
and `control.error` (any stage may fail a turn; only the speaker may also publish
`control.interrupt`), and dead letters under its own role (`dlq.<role>.>`). No role may
create, update, delete or purge a stream: `just nats-setup` (workers.runtime.streams), run
as the operator, owns stream settings. `cli` is the operator (CLIs, demo, set-up, purge):
everything.
The one live-only event, the speaker's echo reference (`live.*.*.speaker.reference`,
core NATS, never stored), is published by the speaker and subscribed to by the mic.

Consumers. A role creates, reads, pulls from, acks and deletes only durables named for it:
its services' shared durables (`recorder`, `stt`, `llm`, `llm-control-llm`, `tts`,
`speaker-<endpoint>`) are denied to every other role by name. Durables with a tool run's pool
or an instance id in their name (`stt-demo-3f2a9c1b`, `llm-control-llm-2`) cannot be told
apart by NATS subject permissions (wildcards match whole tokens only), so those are not
protected from other roles. Deliveries and API replies come on a per-role inbox prefix
(`_INBOX_<role>.>`), the only thing a role may subscribe to.

Reading (see README "Security and privacy"): through its own durables a role reads what their
filters say; stt, tts and speaker also follow a claimed conversation with ephemeral (ordered)
consumers, whose filters NATS cannot check, and every role may look up the last message of
any subject (`STREAM.MSG.GET`/`DIRECT.GET`: bindings, interrupts). So a role can read any
event of the VOICE stream; it cannot read another role's deliveries or API replies.

Gateways. An endpoint gateway is bound to its endpoint: the web gateway (`web`) publishes
only `voice.web.*` input (the page's audio, bindings, playback, barge-ins); the Wyoming bridge
(`wyoming`) only `voice.wyoming.*` input and reads only that endpoint's events (a core
subscription, no JetStream consumer). The mic may not publish on either endpoint.

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

ROLES = ("recorder", "mic", "stt", "llm", "tts", "speaker", "web", "wyoming", "cli")
OPERATOR = "cli"
#: Stages whose events a role publishes (besides control.error).
PUBLISHES: dict[str, tuple[str, ...]] = {
    "recorder": (),
    "mic": ("mic", "endpoint"),
    "stt": ("stt",),
    "llm": ("llm",),
    "tts": ("tts",),
    "speaker": ("speaker",),
    # The web gateway is a page's mic and speaker: its audio, bindings, playback, barge-ins.
    "web": ("mic", "endpoint", "speaker"),
}
#: Gateways that consume nothing from JetStream: role -> (its endpoint, the event types it
#: may publish there). The Wyoming bridge publishes its client's input (a binding, audio, a
#: typed transcript, a reply's text to speak, an interrupt or error when the client goes) and
#: reads only its endpoint's events (a core subscription to `voice.wyoming.>`).
GATEWAYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wyoming": (
        "wyoming",
        (
            "endpoint.>",
            "mic.>",
            "stt.transcript",
            "llm.reply-started",
            "llm.reply-sentence",
            "llm.reply-done",
            "control.error",
            "control.interrupt",
        ),
    ),
}
#: Endpoint roles: the endpoints whose input only they may publish. The mic is the local
#: device and the tool runs' file microphones (their endpoints are named per run); a gateway
#: role (web, wyoming) owns its endpoint, which the mic may then not publish on.
ENDPOINT_ROLES: dict[str, tuple[str, ...]] = {"mic": (), "web": ("web",)}
#: Endpoint -> the gateway role that owns it (the mic may not publish there).
GATEWAY_ENDPOINTS: dict[str, str] = {"web": "web", "wyoming": "wyoming"}
#: Roles that may stop a reply (barge-in); the operator may too.
INTERRUPTS = ("speaker", "web")
#: Roles that follow a claimed utterance or reply with an ephemeral (ordered) consumer
#: (the mic follows its conversation's speculative transcripts to judge the end of a turn).
EPHEMERAL_CONSUMERS = ("mic", "stt", "tts", "speaker", "web")
DLQ_STREAM = "VOICE_DLQ"
#: The services' endpoints (ENDPOINTS' default): the speaker has one durable per endpoint.
SERVICE_ENDPOINTS = ("device", "web", "wyoming")


class UnknownRoleError(ValueError):
    """A WORKER_ID that names no worker role: refused, never run with the operator's rights."""


#: Live-only events (core NATS, never stored): the speaker's echo reference, read by the mic.
LIVE_PUBLISHES = {"speaker": "speaker.reference"}
LIVE_SUBSCRIBES = {"mic": "speaker.reference"}


def role_of(worker_id: str) -> str:
    """ "stt-2", "stt-gpu", "stt" -> "stt"; "" (a CLI) -> the operator; else UnknownRoleError."""
    if not worker_id:
        return OPERATOR
    base = worker_id.split("-", 1)[0]
    if base in ROLES:
        return base
    raise UnknownRoleError(
        f"WORKER_ID={worker_id!r} names no worker role: use <role> or <role>-<name> with a "
        f"role among {', '.join(r for r in ROLES if r != OPERATOR)} (or set NATS_ROLE)"
    )


def role_of_durable(durable: str) -> str:
    """The role owning a durable consumer: its route's first word ("llm-control-x" -> llm)."""
    return durable.split("-", 1)[0]


def service_durables(endpoints: tuple[str, ...] = SERVICE_ENDPOINTS) -> dict[str, list[str]]:
    """Role -> the names of its services' shared durables (those of `just up`)."""
    from schemas.routing import ROUTES

    out: dict[str, list[str]] = {}
    for route in ROUTES:
        role = role_of_durable(route.name)
        if route.per_endpoint:
            for ep in endpoints:
                # A gateway plays its own endpoint's replies: that durable is the gateway's.
                owner = GATEWAY_ENDPOINTS.get(ep, role) if route.name == "speaker" else role
                out.setdefault(owner, []).append(route.durable(endpoint=ep))
            continue
        elif route.name == "llm-control":
            names = [route.durable(instance="llm")]  # the default single instance
        else:
            names = [route.durable()]
        out.setdefault(role, []).extend(names)
    return out


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


def permissions(
    role: str, stream: str = "VOICE", endpoints: tuple[str, ...] = SERVICE_ENDPOINTS
) -> dict[str, dict[str, list[str]]]:
    """`{"publish": {"allow": [...], "deny": [...]}, "subscribe": {...}}` of a role."""
    if role == OPERATOR:
        return {"publish": {"allow": [">"], "deny": []}, "subscribe": {"allow": [">"], "deny": []}}
    if role in GATEWAYS:
        return _gateway_permissions(role, stream)
    if role not in PUBLISHES:
        raise ValueError(f"unknown NATS role {role!r}: one of {', '.join(ROLES)}")
    api = "$JS.API"
    allow = [f"voice.*.*.{stage}.>" for stage in PUBLISHES[role]]
    deny: list[str] = []
    if role in ENDPOINT_ROLES:
        owned = ENDPOINT_ROLES[role]
        if owned:  # a gateway: its own endpoint only
            allow = [f"voice.{ep}.*.{stage}.>" for ep in owned for stage in PUBLISHES[role]]
        else:  # the mic: any endpoint but those a gateway owns
            for ep in GATEWAY_ENDPOINTS:
                deny += [f"voice.{ep}.*.{stage}.>" for stage in PUBLISHES[role]]
    scope = [f"voice.{ep}.*" for ep in ENDPOINT_ROLES.get(role, ())] or ["voice.*.*"]
    allow += [f"{sc}.control.error" for sc in scope]
    if role in LIVE_PUBLISHES:
        allow.append(f"live.*.*.{LIVE_PUBLISHES[role]}")
    if role in INTERRUPTS:
        allow += [f"{sc}.control.interrupt" for sc in scope]
    allow.append(f"dlq.{role}.>")
    allow.append(f"{api}.INFO")
    allow += [f"{api}.STREAM.INFO.{stream}", f"{api}.STREAM.INFO.{DLQ_STREAM}"]
    # Workers look up the last event of a subject (get_last_msg), e.g. a turn's interrupt.
    allow += [
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
    ]
    # Durables: any name (tool runs and instances have their own), except the services'
    # durables of other roles, denied by name.
    allow += [
        f"{api}.CONSUMER.CREATE.{stream}.*",
        f"{api}.CONSUMER.CREATE.{stream}.*.>",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.*.>",
    ]
    for other, names in service_durables(endpoints).items():
        if other == role:
            continue
        for name in names:
            deny += [
                f"{api}.CONSUMER.CREATE.{stream}.{name}",
                f"{api}.CONSUMER.CREATE.{stream}.{name}.>",
                f"{api}.CONSUMER.INFO.{stream}.{name}",
                f"{api}.CONSUMER.MSG.NEXT.{stream}.{name}",
                f"{api}.CONSUMER.DELETE.{stream}.{name}",
                f"$JS.ACK.{stream}.{name}.>",
            ]
    if role in EPHEMERAL_CONSUMERS:
        allow += [
            # Unnamed: the server refuses a durable name in the request on this subject.
            f"{api}.CONSUMER.CREATE.{stream}",
            f"{api}.CONSUMER.DELETE.{stream}.*",
            f"$JS.FC.{stream}.>",
        ]
    sub = [f"{inbox_prefix(role)}.>"]
    if role in LIVE_SUBSCRIBES:
        sub.append(f"live.*.*.{LIVE_SUBSCRIBES[role]}")
    return {
        "publish": {"allow": allow, "deny": deny},
        "subscribe": {"allow": sub, "deny": []},
    }


def _gateway_permissions(role: str, stream: str) -> dict[str, dict[str, list[str]]]:
    endpoint, types = GATEWAYS[role]
    api = "$JS.API"
    allow = [f"voice.{endpoint}.*.{t}" for t in types]
    allow += [f"dlq.{role}.>", f"{api}.INFO"]
    allow += [f"{api}.STREAM.INFO.{stream}", f"{api}.STREAM.INFO.{DLQ_STREAM}"]
    return {
        "publish": {"allow": allow, "deny": []},
        "subscribe": {"allow": [f"{inbox_prefix(role)}.>", f"voice.{endpoint}.>"], "deny": []},
    }


def inbox_prefix(role: str) -> str:
    """Where a role's replies and deliveries arrive; only that role may subscribe there."""
    return "_INBOX" if role == OPERATOR else f"_INBOX_{role}"


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rules(rules: dict[str, list[str]]) -> str:
    allow = ", ".join(_quote(s) for s in rules["allow"])
    if not rules["deny"]:
        return f"{{ allow: [{allow}] }}"
    deny = ", ".join(_quote(s) for s in rules["deny"])
    return f"{{ allow: [{allow}],\n        deny: [{deny}] }}"


def authorization_block(
    passwords: dict[str, str] | None,
    stream: str = "VOICE",
    endpoints: tuple[str, ...] = SERVICE_ENDPOINTS,
) -> str:
    """The nats-server `authorization {}` block for every role.

    `passwords=None` writes `$NATS_PASSWORD_<ROLE>` references instead, which nats-server
    resolves from its environment (the shipped config).
    """
    users = []
    for role in ROLES:
        perms = permissions(role, stream, endpoints)
        pw = "$" + password_env(role) if passwords is None else _quote(passwords[role])
        users.append(
            f"    {{ user: {_quote(role)}, password: {pw},\n"
            f"      permissions: {{ publish: {_rules(perms['publish'])},"
            f" subscribe: {_rules(perms['subscribe'])} }} }}"
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
    try:
        role = settings.nats_role or role_of(settings.worker_id)
    except UnknownRoleError:
        return None  # no credentials: the worker refuses to start (service.run_worker)
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
            pad = " " * len(role)
            print(f"{role}: publish {' '.join(perms['publish']['allow'])}")
            if perms["publish"]["deny"]:
                print(f"{pad}  publish denied {' '.join(perms['publish']['deny'])}")
            print(f"{pad}  subscribe {' '.join(perms['subscribe']['allow'])}")
        return 0
    from workers.runtime.config import get_settings

    path = credentials_file(get_settings().data_dir)
    load_or_create(path)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
