"""Users, service accounts, tokens, sharing and job privacy over the real HTTPS API.

What is proved here (docs/security.md lists it with the rest):
- tokens are random, shown once, stored only hashed; revoked, expired and disabled-user
  tokens get 401 like missing and wrong ones; a valid token without the right gets 403;
- a user sees and uses only services shared with them (by name, group or everyone); others
  read as missing (404);
- a user sees another user's job on a shared service only redacted, and can neither cancel
  nor download it; admins see everything;
- presigned URLs: an upload URL works once; a download URL stops working when its job ends.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import orjson

from tests.support.secstack import SecureStack, secure_stack

PDF = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF\n"


async def submit(http: httpx.AsyncClient, service: str | None, data: bytes = PDF) -> httpx.Response:
    spec = {"service": service, "document_format": "application/pdf", "document_name": "secret-plan.pdf",
            "ticket": {"copies": 1}}
    return await http.post("/api/v1/jobs", files={"job": (None, orjson.dumps(spec), "application/json"),
                                                  "document": ("secret-plan.pdf", data, "application/pdf")})


async def test_tokens_users_and_service_accounts(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        made = await stack.http.post("/api/v1/users", json={"name": "robot", "kind": "service-account",
                                                            "role": "user", "token": True})
        assert made.status_code == 201
        robot_token = made.json()["token"]
        assert robot_token.startswith("ci_") and len(robot_token) > 40
        alice_token = await stack.make_user("alice", groups=["lab"])
        async with await stack.client(robot_token) as robot, await stack.client(alice_token) as alice:
            me = (await robot.get("/api/v1/me")).json()
            assert me["name"] == "robot" and me["kind"] == "service-account" and me["role"] == "user"
            # Shown once: listings carry ids, never the token itself.
            listed = (await stack.http.get("/api/v1/tokens", params={"user": "robot"})).json()["tokens"]
            assert len(listed) == 1 and robot_token not in orjson.dumps(listed).decode()
            # 403: valid token, not an admin.
            for method, path, body in (("GET", "/api/v1/users", None),
                                       ("POST", "/api/v1/users", {"name": "eve", "role": "admin"}),
                                       ("PATCH", "/api/v1/users/alice", {"role": "admin"}),
                                       ("POST", "/api/v1/users/alice/credits", {"amount": 100}),
                                       ("POST", "/api/v1/tokens", {"user": "admin"}),
                                       ("GET", "/api/v1/users/admin", None)):
                response = await alice.request(method, path, json=body)
                assert response.status_code == 403, (method, path, response.text)
                assert response.json()["error"]["code"] == "forbidden"
            # A user makes and revokes their own extra token.
            extra = (await alice.post("/api/v1/tokens", json={"label": "laptop"})).json()
            async with await stack.client(extra["token"]) as laptop:
                assert (await laptop.get("/api/v1/me")).json()["name"] == "alice"
                assert (await alice.delete(f"/api/v1/tokens/{extra['id']}")).status_code == 200
                assert (await laptop.get("/api/v1/me")).status_code == 401
            # Someone else's token id is "not found" to a user; an admin revokes any.
            robot_id = listed[0]["id"]
            assert (await alice.delete(f"/api/v1/tokens/{robot_id}")).status_code == 404
            assert (await stack.http.delete(f"/api/v1/tokens/{robot_id}")).status_code == 200
            assert (await robot.get("/api/v1/me")).status_code == 401
            # Expired tokens and disabled users are refused too.
            short = (await stack.http.post("/api/v1/tokens", json={"user": "alice", "expires_in": 0.2})).json()
            await asyncio.sleep(0.3)
            async with await stack.client(short["token"]) as expired:
                assert (await expired.get("/api/v1/me")).status_code == 401
            assert (await stack.http.patch("/api/v1/users/alice", json={"disabled": True})).status_code == 200
            assert (await alice.get("/api/v1/me")).status_code == 401
        async with httpx.AsyncClient(base_url=stack.service.url, verify=str(stack.ca)) as anon:
            for headers in ({}, {"Authorization": "Bearer ci_wrong"}, {"Authorization": f"Basic {robot_token}"}):
                response = await anon.get("/api/v1/me", headers=headers)
                assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        # Stored hashed: no token appears in the database file.
        db = stack.service.config.data_dir / "service.db"
        raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("service.db-*"))
        for token in (robot_token, alice_token, stack.token):
            assert token.encode() not in raw
        with sqlite3.connect(db) as conn:
            hashes = [row[0] for row in conn.execute("SELECT token_hash FROM tokens")]
        assert all(len(h) == 64 for h in hashes)


async def _two_printers(stack: SecureStack) -> tuple[str, str]:
    """Printer 'shared-p' owned by olga, 'private-p' owned by otto; tokens of olga and otto."""
    olga = await stack.make_user("olga", "owner")
    otto = await stack.make_user("otto", "owner")
    for device, owner in (("shared-p", "olga"), ("private-p", "otto")):
        await stack.add_manager(device)
        claimed = await stack.http.post("/api/v1/devices", json={"device_id": device, "owner": owner})
        assert claimed.status_code == 201, claimed.text
    return olga, otto


async def test_sharing_decides_who_sees_and_uses_a_service(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        olga_t, _ = await _two_printers(stack)
        tokens = {name: await stack.make_user(name, groups=groups)
                  for name, groups in (("alice", []), ("bob", ["lab"]), ("carol", []))}
        clients = {name: await stack.client(token) for name, token in tokens.items()}
        olga = await stack.client(olga_t)
        try:
            async def names(who: str) -> set[str]:
                return {s["name"] for s in (await clients[who].get("/api/v1/services")).json()["services"]}

            for who in clients:
                assert await names(who) == set()
                assert (await clients[who].get("/api/v1/services/print/shared-p")).status_code == 404
                refused = await submit(clients[who], "shared-p")
                assert refused.status_code == 404
                assert (await submit(clients[who], None)).status_code == 404  # no service to pick
                assert (await clients[who].post("/api/v1/services/print/shared-p/validate",
                                                json={})).status_code == 404
            assert (await olga.get("/api/v1/services")).json()["services"][0]["name"] == "shared-p"
            # Olga owns shared-p but not private-p: she may share only her own.
            assert (await olga.post("/api/v1/services/print/private-p/shares",
                                    json={"user": "alice"})).status_code == 404

            by_user = await olga.post("/api/v1/services/print/shared-p/shares", json={"user": "alice"})
            assert by_user.status_code == 201
            assert await names("alice") == {"shared-p"} and await names("bob") == set()
            by_group = await olga.post("/api/v1/devices/shared-p/shares", json={"group": "lab"})
            assert by_group.status_code == 201
            assert await names("bob") == {"shared-p"} and await names("carol") == set()
            everyone = await olga.post("/api/v1/devices/shared-p/shares", json={"everyone": True})
            assert await names("carol") == {"shared-p"}
            assert (await submit(clients["carol"], None)).status_code == 201  # picks the one it may use
            # A shared user may use the service but not manage it.
            assert (await clients["alice"].put("/api/v1/services/print/shared-p/policy",
                                               json={"price_per_impression": 0})).status_code == 403
            assert (await clients["alice"].post("/api/v1/devices/shared-p/shares",
                                                json={"user": "carol"})).status_code == 403
            # Unsharing takes effect at once.
            await olga.delete(f"/api/v1/devices/shared-p/shares/{everyone.json()['id']}")
            assert await names("carol") == set()
            assert (await submit(clients["carol"], "shared-p")).status_code == 404
            # The admin sees everything, registered or not.
            admin_names = {s["name"] for s in (await stack.http.get("/api/v1/services")).json()["services"]}
            assert admin_names == {"shared-p", "private-p"}
        finally:
            for client in (*clients.values(), olga):
                await client.aclose()


async def test_users_see_only_their_own_jobs_in_detail(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        olga_t, _ = await _two_printers(stack)
        alice = await stack.client(await stack.make_user("alice"))
        bob = await stack.client(await stack.make_user("bob"))
        eve = await stack.client(await stack.make_user("eve"))
        olga = await stack.client(olga_t)
        try:
            for who in ("alice", "bob"):
                await olga.post("/api/v1/devices/shared-p/shares", json={"user": who})
            await stack.stop_manager("shared-p")  # keep the job pending, so it can be canceled
            job = (await submit(alice, "shared-p")).json()
            jid = job["id"]
            mine = (await alice.get(f"/api/v1/jobs/{jid}")).json()
            assert mine["owner"] == "alice" and mine["documents"][0]["name"] == "secret-plan.pdf"
            assert not mine["redacted"] and mine["retention"]["documents"] == "after-duration"
            got = await alice.get(f"/api/v1/jobs/{jid}/documents/1")
            assert got.status_code == 200 and got.content == PDF

            seen = (await bob.get(f"/api/v1/jobs/{jid}")).json()
            assert seen["redacted"] and seen["owner"] == "" and seen["documents"] == [] and seen["ticket"] == {}
            assert "secret-plan" not in orjson.dumps(seen).decode()
            queue = (await bob.get("/api/v1/jobs", params={"service": "shared-p"})).json()["jobs"]
            assert [j["id"] for j in queue] == [jid] and queue[0]["redacted"]
            assert (await bob.get("/api/v1/jobs")).json()["jobs"] == []
            assert (await bob.post(f"/api/v1/jobs/{jid}/cancel")).status_code == 403
            assert (await bob.get(f"/api/v1/jobs/{jid}/documents/1")).status_code == 403
            assert (await bob.get(f"/api/v1/jobs/{jid}/events")).status_code == 404
            # Eve cannot even see the service: the job does not exist for her.
            for path in (f"/api/v1/jobs/{jid}", f"/api/v1/jobs/{jid}/documents/1"):
                assert (await eve.get(path)).status_code == 404
            assert (await eve.post(f"/api/v1/jobs/{jid}/cancel")).status_code == 404
            assert (await eve.get("/api/v1/jobs", params={"service": "shared-p", "all": True})).json()["jobs"] == []
            # The admin sees it all; the printer's owner may cancel it (she runs the printer).
            full = (await stack.http.get(f"/api/v1/jobs/{jid}")).json()
            assert full["owner"] == "alice" and not full["redacted"]
            assert (await olga.get(f"/api/v1/jobs/{jid}")).json()["redacted"]
            canceled = await olga.post(f"/api/v1/jobs/{jid}/cancel")
            assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
        finally:
            for client in (alice, bob, eve, olga):
                await client.aclose()


async def test_presigned_urls_cannot_be_replayed(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        await stack.add_manager("url-p")
        await stack.stop_manager("url-p")
        created = await stack.http.post("/api/v1/jobs", json={"service": "url-p", "upload": True,
                                                              "document_format": "application/pdf"})
        upload_url = created.json()["upload_url"]
        job_id = created.json()["id"]
        async with httpx.AsyncClient(verify=str(stack.ca)) as http:
            assert (await http.put(upload_url, content=PDF)).status_code == 200
            replay = await http.put(upload_url, content=b"%PDF-1.4 swapped")
            assert replay.status_code == 409 and replay.json()["error"]["code"] == "document-stored"
            tampered = upload_url.replace("m=PUT", "m=GET")
            assert (await http.get(tampered)).status_code == 403
            key = f"jobs/{job_id}/doc-1"
            url, _ = stack.service.objects.presign(key, "GET", 60)
            assert (await http.get(url)).status_code == 200  # while the job is under way
            expired, _ = stack.service.objects.signer.sign(key, "GET", 60, now=time.time() - 120)
            assert (await http.get(expired)).status_code == 403
            await stack.http.post(f"/api/v1/jobs/{job_id}/cancel")
            replayed = await http.get(url)  # still within its lifetime, but the job has ended
            assert replayed.status_code == 410
