"""The grading web server: standard-library ``http.server``, local by default.

Routes (everything else is 404):

=========================  ==============================================================
``GET /``                  the page (``static/index.html``)
``GET /static/NAME``       the page's script and style sheet (a fixed list of files)
``GET /api/candidates``    the cache manifest: run, bands, candidates, image paths
``GET /api/grades?grader`` that grader's current grades
``POST /api/grades``       JSON ``{"grader", "object_id", "grade"}`` -> 201, or 4xx + error
``GET /files/PATH``        a PNG of the run's inspection cache
=========================  ==============================================================

Safety: files are served only from the package's static list and from the cache
directory inside the run directory (``..``, hidden names, encoded traversal and
symbolic links leading out are refused with 403); every posted field is validated
(:mod:`catalogs.inspect.grades`); POST bodies must be small JSON (so a cross-site HTML
form cannot post a grade); while bound to a loopback address the ``Host`` header must
name a loopback host (no DNS rebinding); and :func:`check_bind_address` refuses a
non-loopback address unless ``allow_public`` is set.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from catalogs.inspect.cache import read_manifest
from catalogs.inspect.data import InspectionRun
from catalogs.inspect.grades import (
    GRADE_SCALE,
    GradeStore,
    ValidationError,
    object_id_type_of,
    validate_grade,
    validate_grader,
    validate_object_id,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
MAX_BODY_BYTES = 4096
SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class BindRefused(ValueError):
    """A non-loopback bind address without ``allow_public``."""


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def check_bind_address(host: str, allow_public: bool) -> None:
    """Raise :class:`BindRefused` for a non-loopback ``host`` unless ``allow_public``."""
    if not is_loopback(host) and not allow_public:
        raise BindRefused(
            f"refusing to serve on {host!r}, which is not a loopback address: anyone who can reach it "
            "could read the candidates and post grades. Use --host 127.0.0.1 with an SSH tunnel "
            "(ssh -N -L PORT:127.0.0.1:PORT host), or pass --allow-public if you really mean it."
        )


@dataclass
class InspectionApp:
    """What the request handlers share: the run, its image cache and its grade store."""

    run: InspectionRun
    cache_dir: Path
    store: GradeStore = field(init=False)
    manifest_json: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.cache_dir = self.cache_dir.resolve()
        if not self.cache_dir.is_relative_to(self.run.run_dir):
            raise ValueError(f"the cache {self.cache_dir} must lie inside the run directory {self.run.run_dir}")
        self.store = GradeStore(self.run.run_dir, object_id_type_of(self.run.catalogue["object_id"]))
        manifest = read_manifest(self.cache_dir)
        manifest["grade_scale"] = {str(k): v for k, v in GRADE_SCALE.items()}
        self.manifest_json = json.dumps(manifest).encode()

    def grades_of(self, grader: str) -> list[dict[str, Any]]:
        latest = self.store.latest_for(grader)
        return [
            {"object_id": _plain(row.object_id), "grade": int(row.grade),
             "graded_utc": row.graded_utc.isoformat(timespec="milliseconds")}
            for row in latest.itertuples(index=False)
        ]

    def add_grade(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise ValidationError("the body must be a JSON object")
        unknown = set(payload) - {"grader", "object_id", "grade"}
        if unknown:
            raise ValidationError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:100]}")
        grader = validate_grader(payload.get("grader"))
        object_id = validate_object_id(payload.get("object_id"), self.run.object_ids)
        grade = validate_grade(payload.get("grade"))
        return self.store.append(grader, object_id, grade)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class InspectionHandler(BaseHTTPRequestHandler):
    """Serves one request; the app is attached to the server as ``server.app``."""

    server_version = "lensfinder-inspect"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> InspectionApp:
        return self.server.app  # type: ignore[attr-defined]

    # -- plumbing -------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def _host_allowed(self) -> bool:
        if getattr(self.server, "allow_public", False):
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[: host.find("]") + 1] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if ":" in host else host
        return name in LOOPBACK_NAMES or (name.startswith("127.") and is_loopback(name))

    # -- methods --------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._host_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        parts = urlsplit(self.path)
        path = parts.path
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if path == "/api/candidates":
            return self._send(HTTPStatus.OK, self.app.manifest_json, "application/json")
        if path == "/api/grades":
            query = parse_qs(parts.query, max_num_fields=4)
            try:
                grader = validate_grader((query.get("grader") or [""])[0])
            except ValidationError as error:
                return self._error(HTTPStatus.BAD_REQUEST, str(error))
            return self._json(HTTPStatus.OK, {"grader": grader, "grades": self.app.grades_of(grader)})
        if path.startswith("/files/"):
            return self._file(path[len("/files/"):])
        return self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if not self._host_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if urlsplit(self.path).path != "/api/grades":
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if not 0 < length <= MAX_BODY_BYTES:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be 1-{MAX_BODY_BYTES} bytes")
        try:
            payload = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "the body is not valid JSON")
        except RecursionError:  # e.g. [[[[...]]]]: the body limit still allows ~2000 levels
            return self._error(HTTPStatus.BAD_REQUEST, "the body is nested too deeply")
        try:
            row = self.app.add_grade(payload)
        except ValidationError as error:
            return self._error(HTTPStatus.BAD_REQUEST, str(error))
        except RecursionError:
            return self._error(HTTPStatus.BAD_REQUEST, "a field is nested too deeply")
        row["object_id"] = _plain(row["object_id"])
        return self._json(HTTPStatus.CREATED, row)

    # -- files ----------------------------------------------------------------------

    def _static(self, name: str) -> None:
        if name not in STATIC_FILES:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, (STATIC_DIR / name).read_bytes(), STATIC_FILES[name], cache="no-cache")

    def _file(self, encoded: str) -> None:
        try:
            relative = unquote(encoded, errors="strict")
        except UnicodeDecodeError:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        segments = relative.split("/")
        if "\\" in relative or "\x00" in relative or any(s in ("", ".", "..") or s.startswith(".") for s in segments):
            return self._error(HTTPStatus.FORBIDDEN, "forbidden path")
        root = self.app.cache_dir
        target = (root / relative).resolve()
        if not target.is_relative_to(root):
            return self._error(HTTPStatus.FORBIDDEN, "forbidden path")
        if target.suffix != ".png" or not target.is_file():
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, target.read_bytes(), "image/png", cache="private, max-age=3600")


class InspectionServer(ThreadingHTTPServer):
    """A threading HTTP server carrying the app (IPv6 when the host is an IPv6 address)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: InspectionApp, allow_public: bool = False):
        host = address[0].strip("[]")
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        self.allow_public = allow_public
        super().__init__((host, address[1]), InspectionHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a browser drops a connection (e.g. a reload during a fetch)."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        address, port = self.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else str(address)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


def make_server(
    app: InspectionApp, host: str = "127.0.0.1", port: int = 0, allow_public: bool = False
) -> InspectionServer:
    """Bind the server (port 0 = any free port) after :func:`check_bind_address`."""
    check_bind_address(host, allow_public)
    return InspectionServer((host, port), app, allow_public)


def serve_in_thread(server: InspectionServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread (stop with ``server.shutdown()``)."""
    thread = threading.Thread(target=server.serve_forever, name="inspect-server", daemon=True)
    thread.start()
    return thread
