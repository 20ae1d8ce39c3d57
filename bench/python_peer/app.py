"""The Python peer: the handler's job done the way Microsoft's Python quickstart does it.

The quickstart ("Use Microsoft Entra ID for cache authentication", Python, the
version with re-authentication) gets a token with DefaultAzureCredential for
https://redis.azure.com/.default, reads the user name from the token's `oid`,
connects with redis-py over TLS with the token as password, and before each
command checks `token.expires_on - time.time() < 300`; when that is true it
gets a new token and sends `AUTH <user> <token>`. On a ConnectionError it makes
a new client with a fresh token and tries again, 3 tries in all.

Here that loop serves the same HTTP routes as the Rust handler, in an asyncio
server (aiohttp) with redis.asyncio, as a Python custom handler would:

    GET /                  readiness (the Functions host polls it)
    GET /api/ping          {"pong": true, "latency_ms": n}
    GET /api/cache/{key}   {"key": k, "value": v}, 404 when absent
    PUT /api/cache/{key}   body = value; {"key": k, "stored": true}

Differences from the quickstart, each in the peer's favour or needed for asyncio:
the refresh is single-flight (an asyncio.Lock, so 256 concurrent requests do
not fetch 256 tokens), the token and connection are fetched in the background
at start-up as the handler does, and there is no per-request log line (the
handler writes one; aiohttp's access log is off). redis-py's client holds a
pool: under concurrency it opens one connection per in-flight command, and
the quickstart's `AUTH` reaches only the connection it runs on; new pool
connections get the new token through the pool's connection arguments.

Settings are the handler's: Redis__redisHostName, Redis__port,
Redis__tokenRefreshOffsetSeconds, SSL_CERT_FILE, IDENTITY_ENDPOINT and
IDENTITY_HEADER (DefaultAzureCredential then uses the App Service managed
identity endpoint), FUNCTIONS_CUSTOMHANDLER_PORT.
"""

import asyncio
import base64
import json
import os
import sys
import time

import redis.asyncio as redis
from aiohttp import web
from azure.identity.aio import DefaultAzureCredential

SCOPE = "https://redis.azure.com/.default"
HOST = os.environ["Redis__redisHostName"]
PORT = int(os.environ.get("Redis__port", "6380"))
REFRESH_OFFSET = float(os.environ.get("Redis__tokenRefreshOffsetSeconds", "300"))
CA_FILE = os.environ.get("SSL_CERT_FILE")
MAX_RETRY = 3


def extract_username_from_token(token):
    """The quickstart's helper: the `oid` claim of the JWT's payload."""
    parts = token.split(".")
    base64_str = parts[1]
    if len(base64_str) % 4 == 2:
        base64_str += "=="
    elif len(base64_str) % 4 == 3:
        base64_str += "="
    json_bytes = base64.urlsafe_b64decode(base64_str)
    return json.loads(json_bytes.decode("utf-8"))["oid"]


def _need_refreshing(token, refresh_offset=REFRESH_OFFSET):
    """The quickstart's check, made on every command."""
    return not token or token.expires_on - time.time() < refresh_offset


class Cache:
    """One redis-py client, its token, and the quickstart's refresh and retry."""

    def __init__(self):
        self.cred = DefaultAzureCredential()
        self.token = None
        self.user = None
        self.client = None
        self.lock = asyncio.Lock()

    def _new_client(self):
        pool = redis.BlockingConnectionPool(
            connection_class=redis.SSLConnection,
            max_connections=100,
            timeout=20,
            host=HOST,
            port=PORT,
            ssl_ca_certs=CA_FILE,
            username=self.user,
            password=self.token.token,
            decode_responses=True,
        )
        return redis.Redis(connection_pool=pool)

    async def _ensure(self, reconnect=False):
        if self.client is not None and not reconnect and not _need_refreshing(self.token):
            return self.client
        async with self.lock:
            if self.client is not None and not reconnect and not _need_refreshing(self.token):
                return self.client
            self.token = await self.cred.get_token(SCOPE)
            self.user = extract_username_from_token(self.token.token)
            if self.client is None or reconnect:
                old, self.client = self.client, self._new_client()
                if old is not None:
                    await old.aclose()
            else:
                await self.client.execute_command("AUTH", self.user, self.token.token)
                self.client.connection_pool.connection_kwargs["password"] = self.token.token
            return self.client

    async def run(self, command):
        """Runs `command(client)` with the quickstart's 3 tries, reconnecting on a lost connection."""
        reconnect = False
        for attempt in range(MAX_RETRY):
            client = await self._ensure(reconnect)
            try:
                return await command(client)
            except redis.ConnectionError:
                if attempt == MAX_RETRY - 1:
                    raise
                reconnect = True


def error(status, code, message):
    if status >= 500:
        print(f"{status} {code}: {message}", file=sys.stderr)
    return web.json_response({"error": message, "code": code}, status=status)


async def ready(_request):
    return web.Response(text="ready")


async def ping(request):
    start = time.perf_counter()
    try:
        reply = await request.app["cache"].run(lambda r: r.ping())
    except Exception as e:  # noqa: BLE001 - answer 503 as the handler does
        return error(503, "cache_unavailable", repr(e))
    return web.json_response({"pong": bool(reply), "latency_ms": (time.perf_counter() - start) * 1000})


async def get_item(request):
    key = request.match_info["key"]
    try:
        value = await request.app["cache"].run(lambda r: r.get(key))
    except Exception as e:  # noqa: BLE001
        return error(503, "cache_unavailable", repr(e))
    if value is None:
        return error(404, "not_found", f"no value is stored under key {key!r}")
    return web.json_response({"key": key, "value": value})


async def put_item(request):
    key = request.match_info["key"]
    value = await request.text()
    try:
        await request.app["cache"].run(lambda r: r.set(key, value))
    except Exception as e:  # noqa: BLE001
        return error(503, "cache_unavailable", repr(e))
    return web.json_response({"key": key, "stored": True})


async def warm_up(app):
    async def go():
        try:
            await app["cache"].run(lambda r: r.ping())
        except Exception:  # noqa: BLE001 - the first request tries again
            pass

    app["warm_up"] = asyncio.create_task(go())


def main():
    app = web.Application()
    app["cache"] = Cache()
    app.router.add_get("/", ready)
    app.router.add_get("/api/ping", ping)
    app.router.add_get("/api/cache/{key}", get_item)
    app.router.add_put("/api/cache/{key}", put_item)
    app.on_startup.append(warm_up)
    port = int(os.environ.get("FUNCTIONS_CUSTOMHANDLER_PORT") or os.environ.get("FUNCTIONS_HTTPWORKER_PORT") or 8080)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
