"""The MCP tools checked with the official Python MCP SDK, over stdio (`ipto mcp`) and over
streamable HTTP (`/mcp` on the server), against the API itself.

    python .ci/mcp_check.py BASE_URL IPTO_BINARY ADMIN_EMAIL ADMIN_PASSWORD

Signs up a provider, makes a key with every scope the tools need and one without `search:query`,
then on each transport: lists the tools, calls ipto_datasets_list, ipto_datasets_create,
ipto_upload and (after an admin approves the object) ipto_search, comparing each answer with the
API's own, and calls ipto_search with the scope-lacking key, which must be a tool error carrying
the API's code and request id. Prints one search's transcript and `mcp: N passed, M failed`.
"""

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid

import httpx2 as httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

TOOLS = {
    "ipto_search", "ipto_retrieve", "ipto_upload", "ipto_datasets_list", "ipto_datasets_create",
    "ipto_objects_list", "ipto_objects_download", "ipto_keys_create", "ipto_analytics", "ipto_spend",
}
SCOPES = [
    "datasets:read", "datasets:write", "objects:write", "search:query", "keys:write",
    "usage:read", "billing:read",
]

BASE, BINARY, ADMIN_EMAIL, ADMIN_PASSWORD = sys.argv[1:5]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}", flush=True)


def api(method, path, token, body=None):
    answer = httpx.request(method, f"{BASE}/v1{path}", json=body, timeout=30,
                           headers={"authorization": f"Bearer {token}"} if token else {})
    return answer.status_code, answer.json()


def setup():
    email = f"mcp-{uuid.uuid4().hex[:8]}@example.com"
    status, body = api("POST", "/auth/signup", None, {
        "email": email, "password": "mcp check password", "display_name": "MCP",
        "tenant_name": "MCP check"})
    assert status == 201, body
    session = body["data"]["session_token"]
    status, body = api("POST", "/api-keys", session, {"name": "agent", "scopes": SCOPES})
    assert status == 201, body
    full = body["data"]["key"]
    status, body = api("POST", "/api-keys", session, {"name": "reader", "scopes": ["datasets:read"]})
    assert status == 201, body
    reader = body["data"]["key"]
    status, body = api("POST", "/auth/login", None, {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert status == 200, body
    return session, full, reader, body["data"]["session_token"]


async def exercise(label, connect, full, reader, admin, upload_args):
    async with connect(full) as session:
        listed = await session.list_tools()
        names = {tool.name for tool in listed.tools}
        check(f"{label}: the tools are listed", names == TOOLS, names ^ TOOLS)
        check(f"{label}: every tool has an object input schema",
              all(tool.input_schema.get("type") == "object" for tool in listed.tools))
        search_tool = next(t for t in listed.tools if t.name == "ipto_search")
        check(f"{label}: ipto_search says it is metered", "METERED" in (search_tool.description or ""))

        name = f"{label} dataset {uuid.uuid4().hex[:6]}"
        created = await session.call_tool("ipto_datasets_create", {"name": name})
        dataset = created.structured_content or {}
        check(f"{label}: ipto_datasets_create", not created.is_error and dataset.get("name") == name,
              created.content)
        status, body = api("GET", f"/datasets/{dataset.get('dataset_id')}", full)
        check(f"{label}: the created dataset is the API's", status == 200 and body["data"]["name"] == name)

        listed = await session.call_tool("ipto_datasets_list", {"limit": 100})
        ids = [d["dataset_id"] for d in (listed.structured_content or {}).get("items", [])]
        status, body = api("GET", "/datasets?limit=100", full)
        check(f"{label}: ipto_datasets_list equals GET /v1/datasets",
              not listed.is_error and ids == [d["dataset_id"] for d in body["data"]["items"]], ids)

        args, expected_bytes = upload_args(dataset["dataset_id"])
        uploaded = await session.call_tool("ipto_upload", args)
        obj = uploaded.structured_content or {}
        check(f"{label}: ipto_upload stages the object", not uploaded.is_error and obj.get("status") == "staged",
              uploaded.content)
        status, body = api("GET", f"/objects/{obj.get('object_id')}", full)
        check(f"{label}: the object's checksum is its bytes'",
              status == 200 and body["data"]["checksum_sha256"] == hashlib.sha256(expected_bytes).hexdigest())

        tenant = body["data"]["tenant_id"] if status == 200 else ""
        status, body = api("POST", f"/admin/review/objects/{tenant}/{obj.get('object_id')}/approve", admin)
        check(f"{label}: the admin approves it", status == 200, body)

        question = {"query": "which lighthouse keeper logs the tides", "dataset_ids": [dataset["dataset_id"]]}
        found = None
        for _ in range(40):
            found = await session.call_tool("ipto_search", question)
            if (found.structured_content or {}).get("results"):
                break
            time.sleep(0.25)
        hits = [r["object_id"] for r in (found.structured_content or {}).get("results", [])]
        check(f"{label}: ipto_search finds the upload", not found.is_error and hits == [obj.get("object_id")],
              found.content)
        status, body = api("POST", "/search", full, question)
        check(f"{label}: ipto_search equals POST /v1/search",
              status == 200 and [r["object_id"] for r in body["data"]["results"]] == hits)
        if label == "stdio":
            print("-- transcript: tools/call ipto_search")
            print(">>", json.dumps({"name": "ipto_search", "arguments": question}))
            print("<< content[0].text:")
            print(found.content[0].text)
            print("<< structuredContent:", json.dumps(found.structured_content, indent=1))

    async with connect(reader) as session:
        refused = await session.call_tool("ipto_search", {"query": "tides"})
        error = (refused.structured_content or {}).get("error", {})
        request_id = (refused.structured_content or {}).get("request_id") or ""
        check(f"{label}: a key without search:query gets a tool error",
              refused.is_error and error.get("code") == "forbidden" and request_id.startswith("req_"),
              refused.content)
        listed = await session.call_tool("ipto_datasets_list", {})
        check(f"{label}: the same key still lists datasets", not listed.is_error, listed.content)


def stdio(home):
    def connect(key):
        params = StdioServerParameters(command=BINARY, args=["mcp"], env={
            "HOME": home, "IPTO_CONFIG": os.path.join(home, "config.toml"),
            "IPTO_API_URL": BASE, "IPTO_API_KEY": key, "PATH": os.environ.get("PATH", "")})
        return session_over(stdio_client(params))
    return connect


def http(key):
    client = create_mcp_http_client(headers={"authorization": f"Bearer {key}"})
    return session_over(streamable_http_client(f"{BASE}/mcp", http_client=client))


class session_over:
    """A connected, initialised ClientSession over a transport's streams."""

    def __init__(self, transport):
        self.transport = transport

    async def __aenter__(self):
        read, write = (await self.transport.__aenter__())[:2]
        self.session = ClientSession(read, write)
        await self.session.__aenter__()
        await self.session.initialize()
        return self.session

    async def __aexit__(self, *exc):
        await self.session.__aexit__(*exc)
        await self.transport.__aexit__(*exc)


async def main():
    _session, full, reader, admin = setup()
    with tempfile.TemporaryDirectory() as home:
        text = b"The lighthouse keeper logs the tides every night at the harbour.\n"
        path = os.path.join(home, "tides.txt")
        with open(path, "wb") as f:
            f.write(text)
        await exercise("stdio", stdio(home), full, reader, admin,
                       lambda ds: ({"dataset_id": ds, "path": path}, text))
        await exercise("http", http, full, reader, admin,
                       lambda ds: ({"dataset_id": ds, "content": text.decode(), "filename": "tides.txt"}, text))

    for headers in ({}, {"authorization": "Bearer ipto_not_a_key"}):
        answer = httpx.post(f"{BASE}/mcp", headers=headers, timeout=30, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        check(f"http: {'no key' if not headers else 'a bad key'} is 401 before any tool",
              answer.status_code == 401 and body.get("error", {}).get("code") == "unauthorized",
              (answer.status_code, answer.text[:200]))

    failed = results.count(False)
    print(f"mcp: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(asyncio.wait_for(main(), 300)))
