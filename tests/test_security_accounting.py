"""Paid and limited printing: prices with balances, per-user quotas, refusals at submit with
a clear reason, impressions counted from device reports, the accounting report."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from tests.support.secstack import SecureStack, secure_stack

TWO_PAGES = b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n2 0 obj << /Type /Page >> endobj\n%%EOF\n"


async def submit(http: httpx.AsyncClient, service: str, copies: int = 1) -> httpx.Response:
    spec = {"service": service, "document_format": "application/pdf", "ticket": {"copies": copies}}
    return await http.post("/api/v1/jobs", files={"job": (None, orjson.dumps(spec), "application/json"),
                                                  "document": ("d.pdf", TWO_PAGES, "application/pdf")})


async def printer(stack: SecureStack, name: str, owner: str) -> None:
    await stack.add_manager(name)
    assert (await stack.http.post("/api/v1/devices", json={"device_id": name, "owner": owner})).is_success
    assert (await stack.http.post(f"/api/v1/devices/{name}/shares", json={"everyone": True})).is_success


async def test_prices_balances_quotas_and_the_report(tmp_path: Path) -> None:
    async with secure_stack(tmp_path) as stack:
        olga = await stack.client(await stack.make_user("olga", "owner"))
        alice = await stack.client(await stack.make_user("alice"))
        bob = await stack.client(await stack.make_user("bob"))
        try:
            await printer(stack, "pay-p", "olga")
            await printer(stack, "quota-p", "olga")
            # Paid printing: 2 credits an impression; alice has 5 credits.
            assert (await olga.put("/api/v1/services/print/pay-p/policy",
                                   json={"price_per_impression": 2})).status_code == 200
            assert (await alice.get("/api/v1/services/print/pay-p/policy")).json()["price_per_impression"] == 2
            assert (await stack.http.post("/api/v1/users/alice/credits", json={"amount": 5})).json()["balance"] == 5
            job = (await submit(alice, "pay-p")).json()
            assert job["price_per_impression"] == 2
            done = await stack.wait_job(job["id"])
            assert done["state"] == "completed" and done["impressions_completed"] == 2  # the device's count
            assert (await alice.get("/api/v1/me")).json()["balance"] == 1
            broke = await submit(alice, "pay-p")
            assert broke.status_code == 403
            error = broke.json()["error"]
            assert error["code"] == "insufficient-balance" and "balance is 1" in error["message"]
            # A price change later never re-prices an old job.
            await olga.put("/api/v1/services/print/pay-p/policy", json={"price_per_impression": 100})
            assert (await alice.get("/api/v1/me")).json()["balance"] == 1

            # Quotas: each user 3 impressions a month on quota-p; bob's second 2-page job is refused
            # once its pages are known, and ends aborted saying why.
            assert (await olga.put("/api/v1/services/print/quota-p/quotas/*",
                                   json={"impression_limit": 3, "period_days": 30})).status_code == 200
            first = (await submit(bob, "quota-p")).json()
            assert (await stack.wait_job(first["id"]))["state"] == "completed"
            over = await submit(bob, "quota-p")
            assert over.status_code == 403
            error = over.json()["error"]
            assert error["code"] == "quota-exceeded" and "used 2 of your 3" in error["message"]
            bobs = (await bob.get("/api/v1/jobs", params={"all": True})).json()["jobs"]
            refused = [j for j in bobs if j["state"] == "aborted"]
            assert len(refused) == 1 and "quota exceeded" in refused[0]["state_message"]
            too_many = await submit(bob, "quota-p", copies=5)  # refused at once, no job made
            assert too_many.status_code == 403
            assert len((await bob.get("/api/v1/jobs", params={"all": True})).json()["jobs"]) == 2
            # A user's own quota replaces the one for everyone.
            await olga.put("/api/v1/services/print/quota-p/quotas/bob", json={"impression_limit": 10})
            assert (await submit(bob, "quota-p")).status_code == 201
            assert (await alice.put("/api/v1/services/print/quota-p/quotas/alice",
                                    json={"impression_limit": 1000})).status_code == 403

            # The report: per user and service, from what the devices reported.
            report = (await stack.http.get("/api/v1/accounting")).json()["accounting"]
            pay = next(r for r in report if r["user"] == "alice" and r["service"] == "pay-p")
            assert (pay["jobs"], pay["completed_jobs"], pay["impressions"], pay["cost"]) == (1, 1, 2, 4)
            mine = (await alice.get("/api/v1/accounting")).json()["accounting"]
            assert {r["user"] for r in mine} == {"alice"}
            assert (await bob.get("/api/v1/accounting", params={"user": "alice"})).status_code == 403
            owners = (await olga.get("/api/v1/accounting")).json()["accounting"]
            assert {r["user"] for r in owners} >= {"alice", "bob"}  # her printers' users
        finally:
            for client in (olga, alice, bob):
                await client.aclose()
