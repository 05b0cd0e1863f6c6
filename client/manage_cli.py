"""CLI verbs for managing the service: users, tokens, devices, shares, prices, quotas, accounting.

    cloudimaging users add alice --group lab --with-token       # admin; prints the token once
    cloudimaging users add ci-bot --service-account --with-token
    cloudimaging users passwd alice                         # admin; the web console password
    cloudimaging tokens new --label laptop                  # a token for yourself
    cloudimaging tokens revoke 3f2a9c0d11e4b7a8
    cloudimaging devices register printer-7                 # owner; prints the enrollment code
    cloudimaging devices revoke printer-7 --reason stolen
    cloudimaging shares add printer-7 --group lab
    cloudimaging policy printer-7 --price 2 --retention discard-after-processing
    cloudimaging quota printer-7 '*' 500 --days 30
    cloudimaging credit alice 1000
    cloudimaging accounting

Every verb takes ``--json``: one JSON object on stdout, a listing under its plural name
(``{"users": [...]}``) as the service answers it, so scripts read every verb alike. Secrets
(tokens, enrollment codes) are printed once, on stdout, and never written anywhere by the CLI.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from client.cli_common import UsageError, client_for, connection_options, emit_json, out
from client.render import clean, format_time, table
from schemas.api import API_PREFIX


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    with client_for(args) as client:
        return client.request(method, API_PREFIX + path, **kwargs)


def _show(args: argparse.Namespace, value: Any, text: str) -> int:
    if args.json:
        emit_json(value)
    elif text:
        out(text)
    return 0


def _q(value: str) -> str:
    return quote(value, safe="")


# ------------------------------------------------------------------------------ users and tokens


def cmd_users(args: argparse.Namespace) -> int:
    if args.action == "add":
        body = {"name": args.name, "role": args.role, "groups": args.group or [], "token": args.with_token,
                "kind": "service-account" if args.service_account else "person"}
        made = _call(args, "POST", "/users", json=body)
        text = f"created {made['user']['kind']} {clean(made['user']['name'])} ({made['user']['role']})"
        if "token" in made:
            text += f"\ntoken (shown once): {made['token']}"
        return _show(args, made, text)
    if args.action == "set":
        body: dict[str, Any] = {}
        if args.role:
            body["role"] = args.role
        if args.group is not None:
            body["groups"] = args.group
        if args.disable or args.enable:
            body["disabled"] = bool(args.disable)
        user = _call(args, "PATCH", f"/users/{_q(args.name)}", json=body)
        return _show(args, user, f"{clean(user['name'])}: role {user['role']}, groups "
                                 f"{','.join(user['groups']) or '-'}{', disabled' if user['disabled'] else ''}")
    if args.action == "passwd":
        password = _new_password(args)
        done = _call(args, "PUT", f"/users/{_q(args.name)}/password", json={"password": password})
        return _show(args, done, f"password set for {clean(args.name)}; {done['sessions_ended']} console "
                                 "session(s) ended")
    listed = _call(args, "GET", "/users")["users"]
    rows = [[clean(u["name"]), u["kind"], u["role"], ",".join(u["groups"]) or "-", "yes" if u["disabled"] else "no"]
            for u in listed]
    return _show(args, {"users": listed}, table(["NAME", "KIND", "ROLE", "GROUPS", "DISABLED"], rows))


def _new_password(args: argparse.Namespace) -> str:
    """The console password to set: one line of stdin (--password-stdin), else typed twice."""
    import getpass
    import sys

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"new console password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def cmd_tokens(args: argparse.Namespace) -> int:
    if args.action == "new":
        body: dict[str, Any] = {"label": args.label}
        if args.user:
            body["user"] = args.user
        if args.expires_in:
            body["expires_in"] = args.expires_in
        made = _call(args, "POST", "/tokens", json=body)
        return _show(args, made, f"token {made['id']} for {clean(made['user'])} (shown once):\n{made['token']}")
    if args.action == "revoke":
        row = _call(args, "DELETE", f"/tokens/{_q(args.id)}")
        return _show(args, row, f"token {row['id']} of {clean(row['user'])} revoked")
    params = {"user": args.user} if args.user else {}
    listed = _call(args, "GET", "/tokens", params=params)["tokens"]
    rows = [[t["id"], clean(t["user"]), clean(t["label"] or "-"), format_time(t["created_at"]),
             format_time(t["expires_at"]), "revoked" if t["revoked_at"] else "active"] for t in listed]
    return _show(args, {"tokens": listed}, table(["ID", "USER", "LABEL", "CREATED", "EXPIRES", "STATE"], rows))


# ------------------------------------------------------------------------------ devices and sharing


def cmd_devices(args: argparse.Namespace) -> int:
    if args.action == "register":
        body = {"device_id": args.id, **({"owner": args.owner} if args.owner else {})}
        made = _call(args, "POST", "/devices", json=body)
        return _show(args, made, _code_text(args.id, made))
    if args.action == "code":
        made = _call(args, "POST", f"/devices/{_q(args.id)}/enrollment-codes")
        return _show(args, made, _code_text(args.id, made))
    if args.action in ("revoke", "remove"):
        if args.action == "revoke":
            done = _call(args, "POST", f"/devices/{_q(args.id)}/revoke", json={"reason": args.reason})
        else:
            done = _call(args, "DELETE", f"/devices/{_q(args.id)}")
        verb = "revoked" if args.action == "revoke" else "deregistered"
        text = (f"{clean(args.id)} {verb}: {done['certificates_revoked']} certificate(s), "
                f"{len(done['jobs_ended'])} job(s) ended, "
                f"{'disconnected' if done['disconnected'] else 'NOT seen disconnecting yet'}")
        return _show(args, done, text)
    listed = _call(args, "GET", "/devices")["devices"]
    rows = [[clean(d["id"]), clean(d["owner"] or "-"), d["auth"], "online" if d["online"] else "offline",
             "revoked" if d["revoked_at"] else ("deregistered" if d["deregistered_at"] else "active"),
             ",".join(clean(s) for s in d["services"]) or "-"] for d in listed]
    return _show(args, {"devices": listed}, table(["DEVICE", "OWNER", "AUTH", "ONLINE", "STATE", "SERVICES"], rows))


def _code_text(device_id: str, made: dict[str, Any]) -> str:
    return (f"enrollment code for {clean(device_id)} (one use, until {format_time(made['code_expires_at'])}):\n"
            f"{made['enrollment_code']}\n"
            f"on the device: cloudimaging manager enroll CODE --url SERVICE_URL --ca CA.pem --config FILE")


def cmd_shares(args: argparse.Namespace) -> int:
    base = f"/devices/{_q(args.device)}/shares"
    if args.action == "add":
        body: dict[str, Any] = {"service": args.service}
        if args.user:
            body["user"] = args.user
        elif args.group:
            body["group"] = args.group
        else:
            body["everyone"] = True
        share = _call(args, "POST", base, json=body)
        return _show(args, share, f"share {share['id']}: {share['service']} with {share['kind']} "
                                  f"{clean(share['principal'])}")
    if args.action == "remove":
        done = _call(args, "DELETE", f"{base}/{args.share_id}")
        return _show(args, done, f"share {args.share_id} removed")
    listed = _call(args, "GET", base)["shares"]
    rows = [[str(s["id"]), clean(s["service"]), s["kind"], clean(s["principal"]), clean(s["created_by"])]
            for s in listed]
    return _show(args, {"shares": listed}, table(["ID", "SERVICE", "WITH", "WHO", "BY"], rows))


# ------------------------------------------------------------------------------ paid printing


def cmd_policy(args: argparse.Namespace) -> int:
    path = f"/services/{_q(args.kind)}/{_q(args.service)}/policy"
    body: dict[str, Any] = {}
    for key, value in (("price_per_impression", args.price), ("document_retention", args.retention),
                       ("document_retention_seconds", args.retention_seconds),
                       ("history_retention_seconds", args.history_seconds)):
        if value is not None:
            body[key] = value
    row = _call(args, "PUT", path, json=body) if body else _call(args, "GET", path)
    text = "\n".join(f"{k}: {v if v is not None else '-'}" for k, v in row.items())
    return _show(args, row, text)


def cmd_quota(args: argparse.Namespace) -> int:
    path = f"/services/{_q(args.kind)}/{_q(args.service)}/quotas"
    if args.user is None:
        listed = _call(args, "GET", path)
    elif args.limit is None:
        listed = _call(args, "DELETE", f"{path}/{_q(args.user)}")
    else:
        body = {"impression_limit": args.limit, **({"period_days": args.days} if args.days else {})}
        listed = _call(args, "PUT", f"{path}/{_q(args.user)}", json=body)
    rows = [[clean(q["user"]), str(q["impression_limit"]), f"{q['period_days']:g}d" if q["period_days"] else "ever"]
            for q in listed["quotas"]]
    return _show(args, listed, table(["USER", "IMPRESSIONS", "PER"], rows))


def cmd_credit(args: argparse.Namespace) -> int:
    done = _call(args, "POST", f"/users/{_q(args.user)}/credits", json={"amount": args.amount, "note": args.note})
    return _show(args, done, f"{clean(args.user)}: balance {done['balance']}")


def cmd_accounting(args: argparse.Namespace) -> int:
    params = {k: v for k, v in (("user", args.user), ("service", args.service)) if v}
    rows = _call(args, "GET", "/accounting", params=params)["accounting"]
    lines = [[clean(r["user"]), clean(r["service"]), str(r["jobs"]), str(r["impressions"]), str(r["cost"])]
             for r in rows]
    return _show(args, {"accounting": rows}, table(["USER", "SERVICE", "JOBS", "IMPRESSIONS", "COST"], lines))


def add_parser(sub: Any) -> None:
    common = [connection_options(top=False)]
    roles = ["admin", "owner", "user"]

    p = sub.add_parser("users", parents=common, help="list, add or change users and service accounts (admin)")
    p.add_argument("action", nargs="?", choices=["list", "add", "set", "passwd"], default="list")
    p.add_argument("name", nargs="?", help="user name (add, set, passwd)")
    p.add_argument("--role", choices=roles, help="role (add: default user)")
    p.add_argument("--group", action="append", help="group membership (repeatable; set replaces all)")
    p.add_argument("--service-account", action="store_true", help="add a service account (a program)")
    p.add_argument("--with-token", action="store_true", help="add: also make a first token (printed once)")
    p.add_argument("--disable", action="store_true", help="set: disable the user and revoke their tokens")
    p.add_argument("--enable", action="store_true", help="set: enable the user again")
    p.add_argument("--password-stdin", action="store_true",
                   help="passwd: read the web console password from stdin (else it is asked twice)")
    p.set_defaults(func=_need("name", ("add", "set", "passwd"), cmd_users))

    p = sub.add_parser("tokens", parents=common, help="list, make or revoke API tokens")
    p.add_argument("action", nargs="?", choices=["list", "new", "revoke"], default="list")
    p.add_argument("id", nargs="?", help="token id (revoke)")
    p.add_argument("--user", help="whose tokens (admins only for others)")
    p.add_argument("--label", help="new: a note on what the token is for")
    p.add_argument("--expires-in", type=float, metavar="SECONDS", help="new: lifetime (default: until revoked)")
    p.set_defaults(func=_need("id", ("revoke",), cmd_tokens))

    p = sub.add_parser("devices", parents=common, help="register, list, revoke devices (owners, admins)")
    p.add_argument("action", nargs="?", choices=["list", "register", "code", "revoke", "remove"], default="list")
    p.add_argument("id", nargs="?", help="device id")
    p.add_argument("--owner", help="register: for this user (admins only)")
    p.add_argument("--reason", default="revoked", help="revoke: why (kept in the audit log)")
    p.set_defaults(func=_need("id", ("register", "code", "revoke", "remove"), cmd_devices))

    p = sub.add_parser("shares", parents=common, help="share a device's services with users or groups")
    p.add_argument("device", help="device id")
    p.add_argument("action", nargs="?", choices=["list", "add", "remove"], default="list")
    p.add_argument("share_id", nargs="?", type=int, help="remove: the share's id")
    p.add_argument("--service", default="*", help="add: one service of the device (default: all)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--user", help="add: share with this user")
    who.add_argument("--group", help="add: share with this group")
    who.add_argument("--everyone", action="store_true", help="add: share with everyone")
    p.set_defaults(func=_need("share_id", ("remove",), cmd_shares))

    p = sub.add_parser("policy", parents=common, help="show or set a service's price and retention")
    p.add_argument("service", help="service name")
    p.add_argument("--kind", default="print", help="service kind (default print)")
    p.add_argument("--price", type=int, metavar="CREDITS", help="price per impression")
    p.add_argument("--retention", choices=["discard-after-processing", "after-duration", "keep"],
                   help="default document retention of new jobs")
    p.add_argument("--retention-seconds", type=float, help="with after-duration: how long")
    p.add_argument("--history-seconds", type=float, help="keep ended jobs this long")
    p.set_defaults(func=cmd_policy)

    p = sub.add_parser("quota", parents=common, help="show, set or remove impression quotas of a service")
    p.add_argument("service", help="service name")
    p.add_argument("user", nargs="?", help="user name, or '*' for each user")
    p.add_argument("limit", nargs="?", type=int, help="impressions allowed (omit to remove the quota)")
    p.add_argument("--days", type=float, help="per this many days (default: ever)")
    p.add_argument("--kind", default="print", help="service kind (default print)")
    p.set_defaults(func=cmd_quota)

    p = sub.add_parser("credit", parents=common, help="add credits to a user's balance (admin)")
    p.add_argument("user")
    p.add_argument("amount", type=int)
    p.add_argument("--note")
    p.set_defaults(func=cmd_credit)

    p = sub.add_parser("accounting", parents=common, help="impressions and cost per user and service")
    p.add_argument("--user")
    p.add_argument("--service")
    p.set_defaults(func=cmd_accounting)


def _need(field: str, actions: tuple[str, ...], func: Any) -> Any:
    """Wrap a verb so that ``field`` is required for some actions (argparse cannot say so)."""

    def run(args: argparse.Namespace) -> int:
        if args.action in actions and getattr(args, field) is None:
            raise UsageError(f"{args.action} needs {field.replace('_', ' ')}")
        if func is cmd_users and args.action == "add" and args.role is None:
            args.role = "user"
        return int(func(args))

    return run
