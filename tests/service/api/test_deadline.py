"""The deadline on one request (service/api/middleware.py Deadline): a slow upload or a slow
answer gets the API's JSON 408 before Serve's plain-text one; an answer already begun is cut.
The real middleware over real ASGI (httpx's transport): no request to the shared service can
be made slow enough cheaply (its limit is 15 minutes)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.api.middleware import Deadline, deadline_s


async def slow_reader(scope, receive, send):
    """Reads the whole body, then answers 200 with its size."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def stalls_after_starting(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    await asyncio.sleep(30)


async def call(app, content=None, seconds: float = 0.5) -> httpx.Response:
    transport = httpx.ASGITransport(app=Deadline(app, seconds=seconds))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/v1/files", content=content)


def test_a_slow_upload_gets_a_json_408_and_a_quick_one_passes():
    async def trickle():
        for _ in range(20):  # 20 bytes over 4 s, against a deadline of 0.5 s
            yield b"x"
            await asyncio.sleep(0.2)

    started = asyncio.run(asyncio.wait_for(call(slow_reader, trickle()), 10))
    assert started.status_code == 408, started.text
    error = started.json()["error"]
    assert error["type"] == "request_timeout" and "TUNESERVE_REQUEST_TIMEOUT_S" in error["message"]
    quick = asyncio.run(call(slow_reader, b"y" * 1000))
    assert quick.status_code == 200 and quick.text == "1000"


def test_an_answer_already_begun_is_cut_not_replaced():
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(call(stalls_after_starting), 10))


def test_ours_answers_before_serves_limit():
    assert deadline_s(900) == 895 and deadline_s(10) == 9 and 0 < deadline_s(0.5) < 0.5
