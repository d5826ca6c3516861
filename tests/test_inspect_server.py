"""The inspection server over real HTTP on 127.0.0.1, the image cache, and the command line.

A small run directory is written directly (catalogue + Zarr store + provenance naming
the tiny test model), so these tests need no Dask cluster.
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
import xarray as xr

from catalogs.inspect.__main__ import main as inspect_main
from catalogs.inspect.cache import MapSettings, build_cache, read_manifest
from catalogs.inspect.data import open_run
from catalogs.inspect.server import BindRefused, InspectionApp, check_bind_address, make_server, serve_in_thread
from catalogs.io import atomic_write_parquet
from lensnet.checkpoint import load_model
from lensnet.preprocess import normalise

N_OBJECTS = 12
TOP = 8
SECRET = "TOP-SECRET-OUTSIDE-THE-CACHE"
KNOWN = "SL2S <J0217> & co"


def write_run(run_dir: Path, model_dir: Path, n: int = N_OBJECTS, checkpoint: str | None = None,
              string_ids: bool = False) -> Path:
    """A run directory as the pipeline writes it, scored with the model in ``model_dir``."""
    loaded = load_model(model_dir)
    config = loaded.config
    size, bands = config.stamp_size_px, list(config.bands)
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:size, :size] - size / 2
    stamps = rng.normal(0, 1, (n, len(bands), size, size))
    stamps += 80 * np.exp(-(x**2 + y**2) / 6)[None, None]
    stamps[::2] += 15 * np.exp(-((np.hypot(x, y) - 8) ** 2) / 2)[None, None]  # arcs on half of them
    stamps = stamps.astype(np.float32)
    inputs, _ = normalise(stamps, config.normalisation, **config.normalisation_params)
    with torch.inference_mode():
        logits = loaded.module(torch.from_numpy(inputs)).numpy()
    order = np.argsort(-logits, kind="stable")
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    if string_ids:
        ids = np.array([f"J{k:04d}+0000" for k in ids], dtype=object)
    catalogue = pd.DataFrame({
        "object_id": ids[order], "ra": 150 + order * 1e-3, "dec": 2.0 + order * 1e-3, "tile": "t00",
        "x_px": 10.0 * order, "y_px": 5.0 * order, "score": (1 / (1 + np.exp(-logits[order]))).astype(np.float32),
        "logit": logits[order].astype(np.float32), "rank": np.arange(1, n + 1, dtype=np.int64),
        "is_candidate": logits[order] > 0, "flags": (order % 3 == 0).astype(np.int32), "cutout_index": order,
        "known_lens_name": [KNOWN if k == 0 else None for k in range(n)],
    })
    run_dir.mkdir(parents=True, exist_ok=True)
    provenance = {
        "bands": bands,
        "model": {"checkpoint": checkpoint or str(model_dir), "name": config.name,
                  "architecture": config.architecture, "weights_sha256": loaded.weights_sha256,
                  "threshold": config.threshold},
        "preprocessing": {"normalisation": config.normalisation, "params": config.normalisation_params},
    }
    atomic_write_parquet(pa.Table.from_pandas(catalogue, preserve_index=False), run_dir / "candidates.parquet",
                         provenance=provenance)
    xr.Dataset(
        {"stamps": (("object", "band", "y", "x"), stamps)},
        coords={"band": np.asarray(bands, dtype=object), "object_id": ("object", ids)},
    ).to_zarr(run_dir / "cutouts.zarr", consolidated=False)
    (run_dir / "run.yaml").write_text(f"secret: {SECRET}\n")
    (run_dir.parent / "secret.png").write_text(SECRET)
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("inspect") / "run", tiny_model)


@pytest.fixture(scope="module")
def cache_dir(run_dir) -> Path:
    return build_cache(open_run(run_dir, TOP), MapSettings(occlusion_stride_px=8))


def start(run_dir: Path, cache_dir: Path):
    server = make_server(InspectionApp(open_run(run_dir, TOP), cache_dir), "127.0.0.1", 0)
    serve_in_thread(server)
    return server


@pytest.fixture(scope="module")
def server(run_dir, cache_dir):
    server = start(run_dir, cache_dir)
    yield server
    server.shutdown()
    server.server_close()


def request(server, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request (the path is sent exactly as given, no normalisation)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=headers is not None and "Host" in headers,
                              skip_accept_encoding=True)
        payload = body.encode() if isinstance(body, str) else body
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if payload is not None:
            connection.putheader("Content-Length", str(len(payload)))
        connection.endheaders(payload)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post_grade(server, payload: object, content_type: str = "application/json") -> tuple[int, dict]:
    status, _, body = request(server, "POST", "/api/grades", json.dumps(payload), {"Content-Type": content_type})
    return status, json.loads(body)


# --- the cache -------------------------------------------------------------------------


def test_cache_holds_every_image_and_the_manifest(cache_dir, run_dir):
    manifest = read_manifest(cache_dir)
    assert cache_dir.parent == run_dir / "inspect_cache"
    assert manifest["bands"] == ["g", "r", "i"] and manifest["rgb"] == {"R": ["i"], "G": ["r"], "B": ["g"]}
    assert manifest["maps"] == ["occlusion", "gradcam"] and manifest["has_known_lens_column"]
    candidates = manifest["candidates"]
    assert [c["rank"] for c in candidates] == list(range(1, TOP + 1))
    catalogue = pd.read_parquet(run_dir / "candidates.parquet")
    assert [c["object_id"] for c in candidates] == catalogue["object_id"].head(TOP).tolist()
    for candidate in candidates:
        assert set(candidate["images"]) == {"rgb", "occlusion", "gradcam"} | {
            f"b{b}-{s}" for b in range(3) for s in ("asinh", "zscale")}
        for relative in candidate["images"].values():
            assert (cache_dir / relative).read_bytes()[:4] == b"\x89PNG"
    assert candidates[0]["known_lens_name"] == KNOWN and candidates[1]["known_lens_name"] is None


def test_cache_is_reused_and_keyed_by_top_n(run_dir, cache_dir):
    stamp = (cache_dir / "manifest.json").stat().st_mtime_ns
    assert build_cache(open_run(run_dir, TOP), MapSettings(occlusion_stride_px=8)) == cache_dir
    assert (cache_dir / "manifest.json").stat().st_mtime_ns == stamp
    other = build_cache(open_run(run_dir, 2), MapSettings(enabled=False))
    assert other != cache_dir and len(read_manifest(other)["candidates"]) == 2
    assert read_manifest(other)["maps"] == []


def test_a_run_whose_model_is_gone_gets_no_maps(tiny_model, tmp_path):
    run_dir = write_run(tmp_path / "run", tiny_model, n=3, checkpoint=str(tmp_path / "moved-away"))
    manifest = read_manifest(build_cache(open_run(run_dir, 3)))
    assert manifest["maps"] == [] and "moved-away" in manifest["maps_note"]


# --- pages and files -------------------------------------------------------------------


def test_page_script_and_candidates_are_served(server):
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and b"<title>" in body and "script-src 'self'" in headers["Content-Security-Policy"]
    for name in ("app.js", "style.css"):
        assert request(server, "GET", f"/static/{name}")[0] == 200
    status, headers, body = request(server, "GET", "/api/candidates")
    manifest = json.loads(body)
    assert status == 200 and len(manifest["candidates"]) == TOP and manifest["grade_scale"]["3"] == "sure lens"
    image = manifest["candidates"][0]["images"]["rgb"]
    status, headers, body = request(server, "GET", f"/files/{image}")
    assert status == 200 and headers["Content-Type"] == "image/png" and body[:4] == b"\x89PNG"


@pytest.mark.parametrize("path", [
    "/files/../../etc/passwd",
    "/files/../../../../../../etc/passwd",
    "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/files/img/../../../run.yaml",
    "/files/..%2f..%2frun.yaml",
    "/files/%252e%252e/%252e%252e/run.yaml",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/img/..%5c..%5crun.yaml",
    "/files/.%2e/.%2e/secret.png",
    "/files/manifest.json",
    "/files/img/%00.png",
    "/files/img/%ff.png",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/server.py",
    "/static/../server.py",
    "/../run.yaml",
])
def test_path_traversal_is_refused(server, path):
    status, _, body = request(server, "GET", path)
    assert status in (403, 404)
    assert b"root:" not in body and SECRET.encode() not in body


def test_a_symlink_out_of_the_cache_is_refused(server, cache_dir):
    link = cache_dir / "img" / "evil.png"
    link.symlink_to(cache_dir.parents[2] / "secret.png")
    try:
        status, _, body = request(server, "GET", "/files/img/evil.png")
        assert status == 403 and SECRET.encode() not in body
    finally:
        link.unlink()


def test_foreign_host_headers_are_refused(server):
    port = server.server_address[1]
    assert request(server, "GET", "/api/candidates", headers={"Host": f"evil.example:{port}"})[0] == 403
    assert request(server, "GET", "/api/candidates", headers={"Host": f"localhost:{port}"})[0] == 200


# --- grades ----------------------------------------------------------------------------


def candidate_ids(server) -> list[int]:
    return [c["object_id"] for c in json.loads(request(server, "GET", "/api/candidates")[2])["candidates"]]


def test_grades_are_recorded_revised_and_listed(server, run_dir):
    first, second = candidate_ids(server)[:2]
    assert post_grade(server, {"grader": "alice", "object_id": first, "grade": 1})[0] == 201
    status, row = post_grade(server, {"grader": "alice", "object_id": second, "grade": 0})
    assert status == 201 and row["grade"] == 0 and row["graded_utc"].endswith("+00:00")
    assert post_grade(server, {"grader": "alice", "object_id": first, "grade": 3})[0] == 201
    assert post_grade(server, {"grader": "bob", "object_id": first, "grade": 2})[0] == 201
    status, _, body = request(server, "GET", "/api/grades?grader=alice")
    grades = {row["object_id"]: row["grade"] for row in json.loads(body)["grades"]}
    assert status == 200 and grades == {first: 3, second: 0}
    history = pd.read_parquet(run_dir / "inspections.parquet")
    assert ((history["grader"] == "alice") & (history["object_id"] == first)).sum() == 2


@pytest.mark.parametrize("payload", [
    {"grader": "alice", "object_id": "FIRST", "grade": 4},
    {"grader": "alice", "object_id": "FIRST", "grade": -1},
    {"grader": "alice", "object_id": "FIRST", "grade": "2"},
    {"grader": "alice", "object_id": "FIRST", "grade": 2.5},
    {"grader": "alice", "object_id": "FIRST", "grade": True},
    {"grader": "alice", "object_id": 999999, "grade": 2},
    {"grader": "alice", "object_id": None, "grade": 2},
    {"grader": "<script>alert(1)</script>", "object_id": "FIRST", "grade": 2},
    {"grader": "x" * 41, "object_id": "FIRST", "grade": 2},
    {"grader": "", "object_id": "FIRST", "grade": 2},
    {"object_id": "FIRST", "grade": 2},
    {"grader": "alice", "object_id": "FIRST", "grade": 2, "admin": True},
    [1, 2, 3],
    "just a string",
])
def test_invalid_grades_are_refused_and_not_stored(server, run_dir, payload):
    first = candidate_ids(server)[0]
    if isinstance(payload, dict) and payload.get("object_id") == "FIRST":
        payload = {**payload, "object_id": first}
    before = len(pd.read_parquet(run_dir / "inspections.parquet")) if (run_dir / "inspections.parquet").exists() else 0
    status, body = post_grade(server, payload)
    assert status == 400 and "error" in body
    after = len(pd.read_parquet(run_dir / "inspections.parquet")) if (run_dir / "inspections.parquet").exists() else 0
    assert after == before


def test_malformed_requests_are_refused(server):
    first = candidate_ids(server)[0]
    good = json.dumps({"grader": "alice", "object_id": first, "grade": 2})
    assert request(server, "POST", "/api/grades", good, {"Content-Type": "text/plain"})[0] == 415
    assert request(server, "POST", "/api/grades", "{not json", {"Content-Type": "application/json"})[0] == 400
    big = json.dumps({"grader": "alice", "object_id": first, "grade": 2, "pad": "x" * 5000})
    assert request(server, "POST", "/api/grades", big, {"Content-Type": "application/json"})[0] == 413
    assert request(server, "POST", "/api/other", good, {"Content-Type": "application/json"})[0] == 404
    assert request(server, "GET", "/api/grades?grader=%3Cb%3E")[0] == 400
    assert request(server, "GET", "/api/grades")[0] == 400


def test_concurrent_graders_lose_nothing(server, run_dir):
    ids = candidate_ids(server)
    before = len(pd.read_parquet(run_dir / "inspections.parquet")) if (run_dir / "inspections.parquet").exists() else 0
    statuses: list[int] = []

    def grade_all(grader: str) -> None:
        for k, object_id in enumerate(ids):
            statuses.append(post_grade(server, {"grader": grader, "object_id": object_id, "grade": k % 4})[0])

    threads = [threading.Thread(target=grade_all, args=(f"grader{k}",)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [201] * (3 * len(ids))
    assert len(pd.read_parquet(run_dir / "inspections.parquet")) == before + 3 * len(ids)


def test_grades_survive_a_server_restart(run_dir, cache_dir):
    first = start(run_dir, cache_dir)
    try:
        object_id = candidate_ids(first)[3]
        assert post_grade(first, {"grader": "carol", "object_id": object_id, "grade": 2})[0] == 201
    finally:
        first.shutdown()
        first.server_close()
    second = start(run_dir, cache_dir)
    try:
        grades = json.loads(request(second, "GET", "/api/grades?grader=carol")[2])["grades"]
        assert [(row["object_id"], row["grade"]) for row in grades] == [(object_id, 2)]
    finally:
        second.shutdown()
        second.server_close()


def test_string_object_ids_round_trip(tiny_model, tmp_path):
    run_dir = write_run(tmp_path / "run", tiny_model, n=3, string_ids=True)
    run = open_run(run_dir, 3)
    server = make_server(InspectionApp(run, build_cache(run, MapSettings(enabled=False))), "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        object_id = candidate_ids(server)[1]
        assert isinstance(object_id, str) and object_id.startswith("J")
        assert post_grade(server, {"grader": "alice", "object_id": object_id, "grade": 2})[0] == 201
        assert post_grade(server, {"grader": "alice", "object_id": 1001, "grade": 2})[0] == 400
        grades = json.loads(request(server, "GET", "/api/grades?grader=alice")[2])["grades"]
        assert [(row["object_id"], row["grade"]) for row in grades] == [(object_id, 2)]
    finally:
        server.shutdown()
        server.server_close()
    assert pd.read_parquet(run_dir / "inspections.parquet")["object_id"].tolist() == [object_id]


# --- binding ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_addresses_are_accepted(host):
    check_bind_address(host, allow_public=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "10.1.2.3", "example.invalid"])
def test_public_addresses_need_the_explicit_flag(host, run_dir, cache_dir):
    with pytest.raises(BindRefused, match="allow-public"):
        check_bind_address(host, allow_public=False)
    check_bind_address(host, allow_public=True)  # only checked, never bound here
    with pytest.raises(BindRefused):
        make_server(InspectionApp(open_run(run_dir, TOP), cache_dir), host, 0)


def test_the_command_line_refuses_a_public_bind_before_doing_any_work(run_dir, capsys):
    assert inspect_main([str(run_dir), "--host", "0.0.0.0", "--port", "0", "--no-maps"]) == 2
    assert "--allow-public" in capsys.readouterr().err


def test_the_command_line_reports_a_directory_that_is_no_run(tmp_path, capsys):
    assert inspect_main([str(tmp_path), "--no-maps", "--gallery", str(tmp_path / "g")]) == 2
    assert "candidates.parquet" in capsys.readouterr().err


# --- export and gallery ----------------------------------------------------------------


def test_export_writes_the_graded_list_with_consensus(server, run_dir, tmp_path):
    first = candidate_ids(server)[0]
    for grader, grade in (("dave", 3), ("erin", 3), ("frank", 2)):
        assert post_grade(server, {"grader": grader, "object_id": first, "grade": grade})[0] == 201
    prefix = tmp_path / "export" / "graded"
    (tmp_path / "export").mkdir()
    assert inspect_main([str(run_dir), "--export", str(prefix)]) == 0
    table = pd.read_parquet(prefix.with_suffix(".parquet"))
    csv = pd.read_csv(prefix.with_suffix(".csv"))
    assert list(table.columns[:8]) == ["combined_rank", "object_id", "mean_grade", "n_graders", "grade_std",
                                       "final_class", "grades", "known_lens_name"]
    assert (table["n_graders"] > 0).all() and len(table) == len(csv)
    assert list(table["combined_rank"]) == list(range(1, len(table) + 1))
    assert (np.diff(table["mean_grade"].to_numpy()) <= 0).all()
    row = table[table["object_id"] == first].iloc[0]
    history = pd.read_parquet(run_dir / "inspections.parquet")
    latest = history.drop_duplicates(["grader", "object_id"], keep="last")
    expected = latest.loc[latest["object_id"] == first, "grade"]
    assert row["n_graders"] == len(expected) and row["mean_grade"] == pytest.approx(expected.mean())
    assert "dave=3" in row["grades"]


def test_gallery_is_static_html_with_escaped_text(run_dir, tmp_path):
    out = tmp_path / "gallery"
    assert inspect_main([str(run_dir), "--top", str(TOP), "--occlusion-stride", "8", "--gallery", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert page.count('<article class="card">') == TOP
    assert "<J0217>" not in page
    sources = [part.split('"')[0] for part in page.split('src="')[1:]]
    assert sources and all((out / source).is_file() for source in sources)
    assert all(not source.startswith(("/", "http")) for source in sources)
