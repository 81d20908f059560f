"""A loopback stand-in for the Rucio server's REST API, as much of it as a download uses.

No Rucio server can run here (the ``rucio`` server package pins old versions of half of our
dependencies, and needs a database and a storage element), so the endpoints that
rucio-clients' ``Client`` and ``DownloadClient`` call are answered in the server's formats:
userpass and bearer-token auth (401 with ``ExceptionClass`` headers as the server sends),
scopes, DID search, DID metadata, file listing, metalink replica lists, RSE descriptions and
the storage the replicas point at. The RSE names ``tests.rucio_transfer.LoopbackGet`` as its
protocol implementation, the one layer replaced.
"""

from __future__ import annotations

import ast
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.rucio_transfer import IMPL

RSE = "LOOPBACK_DISK"
JSON_STREAM = "application/x-json-stream"


@dataclass
class Did:
    scope: str
    name: str
    type: str  # FILE, DATASET, CONTAINER
    children: list[tuple[str, str]] = field(default_factory=list)
    content: bytes = b""
    endless: bool = False  # the storage sends far more than the catalogue says

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.name}"


@dataclass
class RucioWorld:
    account: str = "vis-robot"
    username: str = "vis"
    password: str = "rucio-secret-pw"
    bearer: str = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ2aXMifQ.c2lnbmF0dXJl"
    dids: dict[tuple[str, str], Did] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    accounts_seen: set[str] = field(default_factory=set)
    passwords_seen: list[str] = field(default_factory=list)
    storage_gets: list[str] = field(default_factory=list)
    storage_sent: list[int] = field(default_factory=list)
    base: str = ""

    # --- the catalogue ---------------------------------------------------------------------
    def add_file(self, scope: str, name: str, content: bytes, *, endless: bool = False) -> Did:
        did = Did(scope, name, "FILE", content=content, endless=endless)
        self.dids[(scope, name)] = did
        return did

    def add_collection(self, kind: str, scope: str, name: str, children: list[Did]) -> Did:
        did = Did(scope, name, kind, children=[(c.scope, c.name) for c in children])
        self.dids[(scope, name)] = did
        return did

    def files_of(self, did: Did) -> list[Did]:
        if did.type == "FILE":
            return [did]
        return [f for key in did.children for f in self.files_of(self.dids[key])]

    def parents_of(self, did: Did) -> list[Did]:
        direct = [d for d in self.dids.values() if (did.scope, did.name) in d.children]
        return direct + [p for d in direct for p in self.parents_of(d)]

    def size(self, did: Did) -> int:
        return sum(len(f.content) for f in self.files_of(did))

    # --- the API ---------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/auth/userpass", self.auth_userpass)
        app.router.add_get("/scopes/", self.scopes)
        app.router.add_get("/rses/", self.list_rses)
        app.router.add_get("/rses/{rse}", self.rse)
        app.router.add_get("/dids/{scope}/dids/search", self.search)
        app.router.add_get("/dids/{scope}/{name}/files", self.list_files)
        app.router.add_get("/dids/{scope}/{name}", self.get_did)
        app.router.add_post("/replicas/list", self.replicas)
        app.router.add_get("/storage/{scope}/{name}", self.storage)
        app.router.add_post("/traces/", self.traces)
        return app

    @staticmethod
    def _error(status: int, cls: str, message: str) -> web.Response:
        body = json.dumps({"ExceptionClass": cls, "ExceptionMessage": message})
        return _answer(
            body, "application/json", status, ExceptionClass=cls, ExceptionMessage=message
        )

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(("/auth/", "/storage/")):
            return await handler(request)  # type: ignore[no-any-return]
        self.accounts_seen.add(request.headers.get("X-Rucio-Account", ""))
        token = request.headers.get("X-Rucio-Auth-Token", "")
        if token not in self.tokens and token != self.bearer:
            return self._error(
                401, "CannotAuthenticate", "Cannot authenticate with given credentials"
            )
        return await handler(request)  # type: ignore[no-any-return]

    async def auth_userpass(self, request: web.Request) -> web.Response:
        self.accounts_seen.add(request.headers.get("X-Rucio-Account", ""))
        given = request.headers.get("X-Rucio-Password", "")
        self.passwords_seen.append(given)
        if (request.headers.get("X-Rucio-Username"), given) != (self.username, self.password):
            why = f"Cannot authenticate to account {self.account} with given credentials"
            return self._error(401, "CannotAuthenticate", why)
        token = f"{self.account}-{len(self.tokens)}-unsigned-token"
        self.tokens.add(token)
        return web.Response(
            headers={"X-Rucio-Auth-Token": token, "X-Rucio-Auth-Token-Expires": "x"}
        )

    async def scopes(self, _request: web.Request) -> web.Response:
        return _json(sorted({scope for scope, _ in self.dids}))

    async def list_rses(self, _request: web.Request) -> web.Response:
        return _answer("", JSON_STREAM)  # no tape RSEs here

    async def rse(self, request: web.Request) -> web.Response:
        if request.match_info["rse"] != RSE:
            return self._error(404, "RSENotFound", "RSE does not exist")
        host, port = self.base.split("//", 1)[1].split(":")
        both = {"read": 1, "write": 1, "delete": 1}
        protocol = {
            "scheme": "https", "hostname": host, "port": int(port), "prefix": "/storage/",
            "impl": IMPL, "extended_attributes": None,
            "domains": {"lan": both, "wan": {**both, "third_party_copy_read": 1,
                                            "third_party_copy_write": 1}},
        }  # fmt: skip
        return _json({
            "id": "0" * 32, "rse": RSE, "rse_type": "DISK", "volatile": False,
            "deterministic": False, "domain": ["lan", "wan"], "staging_area": False,
            "availability_read": True, "availability_write": True, "availability_delete": True,
            "verify_checksum": True, "lfn2pfn_algorithm": "hash", "sign_url": None,
            "credentials": None, "qos_class": None, "protocols": [protocol],
        })  # fmt: skip

    def _did_json(self, did: Did) -> dict[str, Any]:
        files = self.files_of(did)
        return {"scope": did.scope, "name": did.name, "type": did.type, "did_type": did.type,
                "account": "jdoe", "bytes": self.size(did), "length": len(files),
                "open": False, "monotonic": False, "expired_at": None}  # fmt: skip

    def _find(self, request: web.Request) -> Did | None:
        return self.dids.get((request.match_info["scope"], request.match_info["name"]))

    async def search(self, request: web.Request) -> web.Response:
        # The client sends its filters as a Python literal: [{'name': ...}].
        groups = ast.literal_eval(request.query.get("filters", "[]")) or [{}]
        scope, wanted = request.match_info["scope"], groups[0].get("name", "")
        found = [self._did_json(d) for (s, n), d in self.dids.items() if s == scope and n == wanted]
        return _answer("".join(json.dumps(d) + "\n" for d in found), JSON_STREAM)  # fmt: skip

    async def get_did(self, request: web.Request) -> web.Response:
        did = self._find(request)
        if did is None:
            return self._error(404, "DataIdentifierNotFound", "Data identifier not found.")
        return _json(self._did_json(did))

    async def list_files(self, request: web.Request) -> web.Response:
        did = self._find(request)
        if did is None:
            return self._error(404, "DataIdentifierNotFound", "Data identifier not found.")
        lines = [json.dumps({"scope": f.scope, "name": f.name, "bytes": len(f.content),
                             "adler32": _adler32(f.content), "md5": _md5(f.content),
                             "guid": None, "events": None}) + "\n"
                 for f in self.files_of(did)]  # fmt: skip
        return _answer("".join(lines), JSON_STREAM)

    async def replicas(self, request: web.Request) -> web.Response:
        asked = json.loads(await request.read())
        files: dict[str, tuple[Did, set[str]]] = {}
        for ref in asked["dids"]:
            did = self.dids.get((ref["scope"], ref["name"]))
            for f in self.files_of(did) if did else []:
                files.setdefault(f.key, (f, set()))[1].update(p.key for p in self.parents_of(f))
        out = ['<?xml version="1.0" encoding="UTF-8"?>',
               '<metalink xmlns="urn:ietf:params:xml:ns:metalink">']  # fmt: skip
        for f, parents in files.values():
            out += [
                f' <file name="{escape(f.name)}">',
                f"  <identity>{escape(f.key)}</identity>",
                "  <parents>"
                + "".join(f"<did>{escape(p)}</did>" for p in sorted(parents))
                + "</parents>",
                f'  <hash type="adler32">{_adler32(f.content)}</hash>',
                f'  <hash type="md5">{_md5(f.content)}</hash>',
                f"  <size>{len(f.content)}</size>",
                f'  <url location="{RSE}" domain="wan" priority="1" client_extract="false">'
                f"https://{self.base.split('//', 1)[1]}/storage/{f.scope}/{escape(f.name)}</url>",
                " </file>",
            ]
        out.append("</metalink>")
        return _answer("\n".join(out), "application/metalink4+xml")

    async def storage(self, request: web.Request) -> web.StreamResponse:
        did = self._find(request)
        self.storage_gets.append(f"{request.match_info['scope']}:{request.match_info['name']}")
        if did is None:
            return web.Response(status=404)
        if not did.endless:
            return web.Response(body=did.content)
        response = web.StreamResponse()
        await response.prepare(request)
        sent = 0
        try:
            for _ in range(200_000):
                await response.write(b"e" * 1000)
                sent += 1000
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.storage_sent.append(sent)
        return response

    async def traces(self, _request: web.Request) -> web.Response:
        return web.Response(status=201)


def _answer(text: str, ctype: str, status: int = 200, **headers: str) -> web.Response:
    # Exactly the server's Content-Type, no charset: the client compares it verbatim.
    return web.Response(
        status=status, body=text.encode(), headers={"Content-Type": ctype, **headers}
    )


def _json(data: Any) -> web.Response:
    return _answer(json.dumps(data), "application/json")


def _adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def start(world: RucioWorld) -> TestServer:
    server = TestServer(world.app(), host="127.0.0.1")
    await server.start_server()
    world.base = str(server.make_url("")).rstrip("/")
    return server
