"""`styleid-edge models fetch/build/list` against a loopback server that imitates Google Drive.

No test touches the network: the download URL is pointed at a local http.server with
$STYLEID_EDGE_DOWNLOAD_URL. The server serves small files directly, large files only after a
virus-scan style confirmation form (confirm + uuid), honours Range (206), can drop the connection
mid-file, and can answer with a quota page (HTML 200, 403 or 429) instead of the file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import secrets
import socket
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from styleid_edge.runtime.stylespace import (
    channel_groups,
    stylespace_layout,
    torgb_channel_mask,
)
from styleid_edge.weights import cli as wcli
from styleid_edge.weights.build import import_channel_rank, import_group_rank
from styleid_edge.weights.cache import LOCK_NAME, LockFile, sha256_file
from styleid_edge.weights.download import URL_ENV, DownloadOptions, fetch
from styleid_edge.weights.errors import (
    HostRefusedError,
    IncompleteDownloadError,
    IntegrityError,
    LicenceError,
    OfflineError,
    RankFormatError,
)
from styleid_edge.weights.registry import get_file

QUOTA_PAGE = ("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
              "<p>Too many users have viewed or downloaded this file recently. Please try accessing the file "
              "again later.</p></body></html>")


# --- the fake host ------------------------------------------------------------------------
@dataclass
class FakeDrive:
    files: dict[str, bytes] = field(default_factory=dict)  # drive id -> content
    large: set[str] = field(default_factory=set)  # ids that need the confirmation form
    quota: dict[str, str] = field(default_factory=dict)  # id -> "html" | "html-octet" | "403" | "429"
    drop_once: dict[str, int] = field(default_factory=dict)  # id -> bytes sent before dropping (once)
    log: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    uuid: str = field(default_factory=lambda: secrets.token_hex(8))
    port: int = 0

    def put(self, name: str, content: bytes, *, large: bool = False) -> str:
        fid = get_file(name).drive_id
        self.files[fid] = content
        if large:
            self.large.add(fid)
        return fid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/download"

    def ranges(self) -> list[str]:
        return [r for _, r in self.log if r]


def _handler(drive: FakeDrive):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            drive.log.append((self.path, self.headers.get("Range")))
            q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            fid = q.get("id", "")
            if urlsplit(self.path).path != "/download" or fid not in drive.files:
                return self._send(404, b"<html><title>Not Found</title></html>", "text/html")
            mode = drive.quota.get(fid)
            if mode in ("403", "429"):
                return self._send(int(mode), QUOTA_PAGE.encode(), "text/html; charset=utf-8")
            if mode == "html":
                return self._send(200, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
            if mode == "html-octet":  # a page sent with a binary content type
                return self._send(200, QUOTA_PAGE.encode(), "application/octet-stream")
            if fid in drive.large and not (q.get("confirm") == "t" and q.get("uuid") == drive.uuid):
                page = (f'<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                        f'<p>This file is too large for Google to scan for viruses.</p>'
                        f'<form id="download-form" action="/download" method="get">'
                        f'<input type="submit" id="uc-download-link" value="Download anyway"/>'
                        f'<input type="hidden" name="id" value="{fid}">'
                        f'<input type="hidden" name="export" value="download">'
                        f'<input type="hidden" name="confirm" value="t">'
                        f'<input type="hidden" name="uuid" value="{drive.uuid}"></form></body></html>')
                return self._send(200, page.encode(), "text/html; charset=utf-8")
            data = drive.files[fid]
            start, code, extra = 0, 200, {"Accept-Ranges": "bytes"}
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
                code = 206
                extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            cut = drive.drop_once.pop(fid, None)
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            if cut is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[:cut])  # then the connection drops mid-file
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    return Handler


def _serve(handler_cls) -> tuple[ThreadingHTTPServer, int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("STYLEID_EDGE_WEIGHTS", raising=False)


@pytest.fixture
def drive(monkeypatch):
    d = FakeDrive()
    server, d.port = _serve(_handler(d))
    monkeypatch.setenv(URL_ENV, d.url)
    yield d
    server.shutdown()
    server.server_close()


FAST = DownloadOptions(retries=3, backoff_s=0.0, timeout_s=10.0, progress=False)


def _blob(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="styleid-edge")
    register_into = p.add_subparsers(dest="command", required=True)
    wcli.register(register_into)
    return p


def run_cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args) or 0)


# --- downloads ----------------------------------------------------------------------------
def test_small_file_is_served_directly_and_locked(drive, tmp_path):
    data = _blob(10_000)
    drive.put("channels_rank.npy", data)
    [r] = fetch(["channels_rank.npy"], tmp_path, accept_licence=True, opts=FAST)
    assert r.status == "downloaded" and (tmp_path / "channels_rank.npy").read_bytes() == data
    assert not list(tmp_path.glob("*.part"))
    lock = LockFile.load(tmp_path / LOCK_NAME)
    assert lock.get("channels_rank.npy").sha256 == hashlib.sha256(data).hexdigest()
    assert len(drive.log) == 1
    [again] = fetch(["channels_rank.npy"], tmp_path, accept_licence=True, opts=FAST)
    assert again.status == "cached" and len(drive.log) == 1  # no second request


def test_large_file_goes_through_the_confirmation_form(drive, tmp_path):
    data = _blob(300_000, 1)
    drive.put("stylegan2-ffhq-config-f.pt", data, large=True)
    fetch(["stylegan2-ffhq-config-f.pt"], tmp_path, accept_licence=True, opts=FAST)
    assert (tmp_path / "stylegan2-ffhq-config-f.pt").read_bytes() == data
    assert len(drive.log) == 2 and f"uuid={drive.uuid}" in drive.log[1][0] and "confirm=t" in drive.log[1][0]


def test_dropped_connection_is_resumed_with_range(drive, tmp_path):
    data = _blob(400_000, 2)
    fid = drive.put("e4e_ffhq_encode.pt", data, large=True)
    drive.drop_once[fid] = 150_000
    fetch(["e4e_ffhq_encode.pt"], tmp_path, accept_licence=True, opts=FAST)
    assert (tmp_path / "e4e_ffhq_encode.pt").read_bytes() == data
    assert drive.ranges() == ["bytes=150000-"]


def test_interrupted_download_keeps_part_and_next_run_resumes(drive, tmp_path):
    data = _blob(200_000, 3)
    fid = drive.put("mapper.pt", data, large=True)
    drive.drop_once[fid] = 64_000
    no_retry = DownloadOptions(retries=0, backoff_s=0.0, timeout_s=10.0, progress=False)
    with pytest.raises(IncompleteDownloadError, match=r"mapper\.pt.*fetch mapper\.pt.*again to resume"):
        fetch(["mapper.pt"], tmp_path, accept_licence=True, opts=no_retry)
    assert not (tmp_path / "mapper.pt").exists()
    assert (tmp_path / "mapper.pt.part").stat().st_size == 64_000
    code = run_cli(["models", "fetch", "mapper.pt", "--dir", str(tmp_path), "--accept-licence"])
    assert code == 0 and (tmp_path / "mapper.pt").read_bytes() == data
    # a new run starts at the page again (with Range), confirms, and continues at byte 64000
    assert set(drive.ranges()) == {"bytes=64000-"} and not (tmp_path / "mapper.pt.part").exists()
    assert f"uuid={drive.uuid}" in drive.log[-1][0] and drive.log[-1][1] == "bytes=64000-"


@pytest.mark.parametrize("mode", ["html", "html-octet", "403", "429"])
def test_quota_refusal_gives_a_clear_message(drive, tmp_path, mode):
    fid = drive.put("celeba_samples.pt", _blob(5_000))
    drive.quota[fid] = mode
    with pytest.raises(HostRefusedError) as err:
        fetch(["celeba_samples.pt"], tmp_path, accept_licence=True, opts=FAST)
    msg = str(err.value)
    assert "celeba_samples.pt" in msg and "retry later" in msg and "browser" in msg
    assert str(tmp_path / "celeba_samples.pt") in msg and get_file("celeba_samples.pt").drive_id in msg
    assert not (tmp_path / "celeba_samples.pt").exists() and not list(tmp_path.glob("*.part"))


def test_offline_is_a_clear_error_without_traceback(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{port}/download")
    with pytest.raises(OfflineError, match=r"model_ir_se50\.pth: cannot reach 127\.0\.0\.1"):
        fetch(["model_ir_se50.pth"], tmp_path, accept_licence=True, opts=FAST)
    code = run_cli(["models", "fetch", "model_ir_se50.pth", "--dir", str(tmp_path), "--accept-licence"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: model_ir_se50.pth: cannot reach") and "Traceback" not in err
    assert "HTTPS_PROXY" in err and str(tmp_path / "model_ir_se50.pth") in err
    assert not any(p.name.startswith("model_ir_se50") for p in tmp_path.iterdir())


def test_hash_mismatch_against_the_lock_is_rejected(drive, tmp_path, capsys):
    data = _blob(50_000, 4)
    fid = drive.put("group_256_rank.npy", data)
    fetch(["group_256_rank.npy"], tmp_path, accept_licence=True, opts=FAST)
    final = tmp_path / "group_256_rank.npy"
    # the host now serves different bytes of the same size: rejected, never under the final name
    final.unlink()
    bad = bytearray(data)
    bad[1234] ^= 0xFF
    drive.files[fid] = bytes(bad)
    with pytest.raises(IntegrityError, match=r"group_256_rank\.npy: sha256 .* does not match"):
        fetch(["group_256_rank.npy"], tmp_path, accept_licence=True, opts=FAST)
    assert not final.exists() and not list(tmp_path.glob("*.part"))
    # a cached file changed on disk: --verify notices it
    final.write_bytes(data)
    assert run_cli(["models", "fetch", "group_256_rank.npy", "--dir", str(tmp_path), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    final.write_bytes(bytes(bad))
    assert run_cli(["models", "fetch", "group_256_rank.npy", "--dir", str(tmp_path), "--verify"]) == 2
    assert "changed since it was first downloaded" in capsys.readouterr().err


def test_registry_sha256_is_enforced(drive, tmp_path):
    from dataclasses import replace

    drive.put("channels_rank.npy", _blob(1000, 5))
    spec = replace(get_file("channels_rank.npy"), sha256="0" * 64)
    with pytest.raises(IntegrityError, match="registry"):
        fetch(cache_dir=tmp_path, accept_licence=True, opts=FAST, specs=[spec])
    assert not (tmp_path / "channels_rank.npy").exists()


def test_licence_is_required_for_non_commercial_files(drive, tmp_path, capsys, caplog):
    drive.put("stylegan2-ffhq-config-f.pt", _blob(1000))
    with pytest.raises(LicenceError):
        fetch(["stylegan2-ffhq-config-f.pt"], tmp_path, opts=FAST)
    code = run_cli(["models", "fetch", "stylegan2-ffhq-config-f.pt", "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--accept-licence" in err and "NVIDIA Source Code License-NC" in err
    assert "licence" in caplog.text and "non-commercial" in caplog.text.lower()
    assert drive.log == [] and not list(tmp_path.iterdir())


def test_proxy_environment_is_honoured(drive, tmp_path, monkeypatch):
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # a forward proxy gets the absolute URL
            seen.append(self.path)
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "user-agent")}
            with direct.open(urllib.request.Request(self.path, headers=headers)) as r:
                body = r.read()
                self.send_response(r.status)
                for k in ("Content-Type", "Content-Range"):
                    if r.headers.get(k):
                        self.send_header(k, r.headers[k])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    proxy, pport = _serve(Proxy)
    try:
        data = _blob(20_000, 6)
        drive.put("channels_rank.npy", data)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{pport}")
        fetch(["channels_rank.npy"], tmp_path, accept_licence=True, opts=FAST)
        assert seen and seen[0].startswith(drive.url) and (tmp_path / "channels_rank.npy").read_bytes() == data
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_fetch_and_list_do_not_import_torch():
    code = ("import sys, styleid_edge.weights.cli, styleid_edge.weights.download; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- rank import --------------------------------------------------------------------------
LAYERS_1024 = stylespace_layout(1024, 2)


def test_channel_rank_over_all_s_is_kept():
    rank = np.random.default_rng(0).permutation(9088)
    imp = import_channel_rank(rank, LAYERS_1024)
    assert imp.kind == "channels" and "9088" in imp.layout
    np.testing.assert_array_equal(imp.rank, rank)


def test_channel_rank_without_torgb_maps_to_flat_s():
    mask = torgb_channel_mask(LAYERS_1024)
    assert (~mask).sum() == 6048
    rank = np.random.default_rng(1).permutation(6048).astype(np.int32).reshape(1, -1)  # (1, N) is accepted
    imp = import_channel_rank(rank, LAYERS_1024)
    conv = np.flatnonzero(~mask)
    np.testing.assert_array_equal(imp.rank, conv[rank.ravel()])
    assert not mask[imp.rank].any() and len(np.unique(imp.rank)) == 6048
    assert imp.rank[0] == conv[rank[0, 0]]


def test_group_ranks_map_to_groups_with_torgb():
    all_g = channel_groups(LAYERS_1024, 256, include_torgb=True)
    conv_g = channel_groups(LAYERS_1024, 256, include_torgb=False)
    assert len(all_g) != len(conv_g)
    rng = np.random.default_rng(2)
    full = rng.permutation(len(all_g))
    np.testing.assert_array_equal(import_group_rank(full, LAYERS_1024).rank, full)
    conv = rng.permutation(len(conv_g))
    imp = import_group_rank(conv, LAYERS_1024)
    for src, dst in zip(conv, imp.rank):
        np.testing.assert_array_equal(all_g[dst], conv_g[src])


@pytest.mark.parametrize("bad, match", [
    (np.arange(5000), "fit neither"),
    (np.zeros(9088, dtype=np.int64), "not a ranking"),
    (np.random.default_rng(0).random(9088), "non-integer"),
    (np.arange(9088).reshape(16, 568), "1-D"),
])
def test_rank_files_that_fit_no_layout_are_refused(bad, match):
    with pytest.raises(RankFormatError, match=match):
        import_channel_rank(bad, LAYERS_1024, "cache/channels_rank.npy")
    with pytest.raises(RankFormatError, match="fit neither"):
        import_group_rank(np.arange(7), LAYERS_1024)


# --- models build end to end --------------------------------------------------------------
def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_models_build_end_to_end(drive, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from styleid_edge.export.arcface import (
        ArcFaceConfig,
        random_arcface,
        save_arcface_checkpoint,
    )
    from styleid_edge.export.e4e import E4EConfig, random_e4e, save_e4e_checkpoint
    from styleid_edge.export.mapper import (
        MapperConfig,
        random_mapper,
        save_mapper_checkpoint,
    )
    from styleid_edge.export.stylegan2 import (
        random_generator,
        save_rosinality_checkpoint,
    )
    from styleid_edge.runtime.identity import ChannelSelector
    from styleid_edge.runtime.pack import ModelPack

    cache, src = tmp_path / "cache", tmp_path / "src"
    cache.mkdir()
    src.mkdir()
    gen = random_generator(32, 1, seed=11, n_mlp=2)
    with torch.no_grad():
        avg = gen.mapping(torch.randn(256, 512, generator=torch.Generator().manual_seed(0))).mean(0)
    save_rosinality_checkpoint(gen, avg, src / "stylegan2-ffhq-config-f.pt")
    # placed in the cache under the official names: no download for these
    save_e4e_checkpoint(random_e4e(E4EConfig.tiny(32, input_size=64, style_dim=512), seed=12),
                        cache / "e4e_ffhq_encode.pt")
    save_mapper_checkpoint(random_mapper(MapperConfig(n_latent=gen.n_latent), seed=13), cache / "mapper.pt")
    save_arcface_checkpoint(random_arcface(ArcFaceConfig.tiny(), seed=14), cache / "model_ir_se50.pth")
    layers = stylespace_layout(32, 1)
    mask = torgb_channel_mask(layers)
    n_conv = int((~mask).sum())
    n_groups = len(channel_groups(layers, 256, include_torgb=True))
    rng = np.random.default_rng(3)
    ch_rank, grp_rank = rng.permutation(n_conv), rng.permutation(n_groups)
    latents = torch.randn(6, gen.n_latent, 512)
    buf = io.BytesIO()
    torch.save(latents, buf)
    # served by the fake host: the generator as a "large" file behind the confirmation form
    drive.put("stylegan2-ffhq-config-f.pt", (src / "stylegan2-ffhq-config-f.pt").read_bytes(), large=True)
    drive.put("channels_rank.npy", _npy(ch_rank))
    drive.put("group_256_rank.npy", _npy(grp_rank))
    drive.put("celeba_samples.pt", buf.getvalue())

    out = tmp_path / "packs" / "official"
    assert run_cli(["models", "build", "--dir", str(cache), "--out", str(out)]) == 2
    assert "--accept-licence" in capsys.readouterr().err and not out.exists() and drive.log == []

    assert run_cli(["models", "build", "--dir", str(cache), "--out", str(out), "--accept-licence"]) == 0
    printed = capsys.readouterr().out
    assert "ranks.channels" in printed and "non-toRGB" in printed and "calibration latents: 6" in printed
    pack = ModelPack.load(out)
    m = pack.manifest
    assert set(m.files) == {"mapping", "affine", "synthesis", "encoder", "recognizer", "mapper"}
    np.testing.assert_array_equal(pack.load_rank("channels"), np.flatnonzero(~mask)[ch_rank])
    np.testing.assert_array_equal(pack.load_rank("groups"), grp_rank)
    cal = np.load(out / m.defaults["calibration_latents"])
    np.testing.assert_allclose(cal, latents.numpy())
    roles = {s["role"]: s["sha256"] for s in m.provenance["sources"]}
    assert roles["stylegan2"] == sha256_file(cache / "stylegan2-ffhq-config-f.pt")
    assert {"channels_rank", "groups_rank", "calibration", "e4e", "arcface", "mapper"} <= set(roles)
    assert len(ChannelSelector(pack, use_groups=True).channels(1.0)) == m.n_styles
    assert not list(out.parent.glob(".*building*"))

    assert run_cli(["models", "list", "--dir", str(cache), "--packs", str(out.parent)]) == 0
    listing = capsys.readouterr().out
    line = next(ln for ln in listing.splitlines() if ln.startswith("stylegan2-ffhq-config-f.pt"))
    assert "locked" in line and str(out) in line
    assert "NON-COMMERCIAL" in listing


def test_a_junk_file_put_in_the_cache_by_hand_is_refused_not_recorded(tmp_path, capsys):
    """A browser 'download' that saved Google Drive's warning page under the weight's name must not get its
    sha256 recorded as the trusted one (no network here: the file is already in the cache)."""
    junk = tmp_path / "stylegan2-ffhq-config-f.pt"
    junk.write_bytes(b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")
    code = run_cli(["models", "fetch", "stylegan2-ffhq-config-f.pt", "--dir", str(tmp_path), "--verify",
                    "--accept-licence"])
    err = capsys.readouterr().err
    assert code == 2 and "is not the model file: it is an HTML page" in err and "drive.google.com" in err
    assert LockFile.load(tmp_path / LOCK_NAME).get("stylegan2-ffhq-config-f.pt") is None
    (tmp_path / "channels_rank.npy").write_bytes(b"")
    with pytest.raises(IntegrityError, match="it is empty"):
        fetch(["channels_rank.npy"], tmp_path, accept_licence=True, opts=FAST)
    # the real formats are recorded: a torch.save zip and an .npy
    junk.write_bytes(b"PK\x03\x04" + _blob(1000))
    buf = io.BytesIO()
    np.save(buf, np.arange(4))
    (tmp_path / "channels_rank.npy").write_bytes(buf.getvalue())
    results = fetch(["stylegan2-ffhq-config-f.pt", "channels_rank.npy"], tmp_path, accept_licence=True, opts=FAST)
    assert [r.status for r in results] == ["recorded", "recorded"]
    assert LockFile.load(tmp_path / LOCK_NAME).get("channels_rank.npy").size == len(buf.getvalue())
