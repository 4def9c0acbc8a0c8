"""`compact-lm web` and `compact-lm serve`: the live demo, a static site that runs one model in the browser.

    compact-lm web runs/demo/pruned-int8.onnx --out site     # index.html, the page's code, the model, the runtime
    compact-lm serve site                                    # http://127.0.0.1:8000/

The site is a folder of static files: the page (`index.html`, `app.js`, `style.css` from the web/ folder),
the JS module `compact_lm.js`, the model (`model.onnx`, and `model-seq.onnx` with --sequence), and
onnxruntime-web's WASM runtime, either copied from a local onnxruntime-web (the ESM bundle and the one
single-threaded .wasm it loads) or loaded from a pinned jsDelivr URL of the same version. `site.json`
says what the page loads; it is written first, so a folder that holds a site, finished or not, is
recognised and may be written again, while any other non-empty folder is refused.

The page fetches nothing but these files: typed text stays in the browser (its Content-Security-Policy
allows connections to the site itself, and to jsDelivr only when the runtime comes from there).
Browsers refuse to fetch .wasm and .onnx files from file:// pages, hence `serve`: http.server on
127.0.0.1, threaded, with the MIME types the page needs.

This module imports only the standard library at import time; `write_site` opens the model with
`compact_lm.open_model` (onnxruntime) to check it before anything is written.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import CompactLMError, SettingError

SITE_MARKER = "site.json"
SITE_KIND = "compact-lm-site"
SITE_VERSION = 1
PAGE_FILES = ("index.html", "app.js", "style.css")   # the page itself, from the web/ folder
MODULE = "compact_lm.js"                           # the JS module (and the relative imports it has)
MODEL_FILE, SEQUENCE_FILE = "model.onnx", "model-seq.onnx"
ORT_PACKAGE = "onnxruntime-web"
ORT_FOLDER = "ort"                                 # where the copied runtime goes inside the site
# What the page loads of onnxruntime-web: the WASM-only ESM bundle (its JS glue included), which fetches
# the single .wasm beside it (resolved from its own URL): the build without JSEP/JSPI/asyncify, run with
# ort.env.wasm.numThreads = 1 so no worker and no SharedArrayBuffer (cross-origin isolation) are needed.
# Imported from another origin (jsDelivr), the bundle also loads its glue as ort-wasm-simd-threaded.mjs.
ORT_BUNDLE = "ort.wasm.bundle.min.mjs"
ORT_WASM = "ort-wasm-simd-threaded.wasm"
ORT_FILES = (ORT_BUNDLE, ORT_WASM)
# The version when the web/ folder names none (web/package-lock.json and web/package.json pin it)
ORT_FALLBACK_VERSION = "1.31.1"
JSDELIVR = "https://cdn.jsdelivr.net"
CDN_DIST = JSDELIVR + "/npm/onnxruntime-web@{version}/dist/"
CSP_PLACEHOLDER = "__CONTENT_SECURITY_POLICY__"
DEFAULT_PORT = 8000
# What the page asks for (site.json "options"); beam and max_chars are the Python Autocompleter's defaults.
# contextCache: when "Learn my words" is on, learned words are also weighed by their context (the context cache:
# about twice the keystrokes learning saves, for a word start some 0.1 ms slower; docs/web.md)
PAGE_OPTIONS = {"beam": 4, "maxChars": 16, "suggestions": 3, "nextChars": 5, "contextCache": True}
MIME_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
              ".onnx": "application/octet-stream", ".json": "application/json",
              ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png",
              ".svg": "image/svg+xml", ".ico": "image/x-icon"}
_RELATIVE_IMPORT = re.compile(r"""(?:\bimport\b[^'"();]*?\bfrom\s*|\bimport\s*\(?\s*|\bexport\b[^'";]*?\bfrom\s*)"""
                              r"""['"](\./[^'"]+)['"]""")


# --------------------------------------------------------------------------------------- the web/ folder
def web_folder() -> Path:
    """The folder with the page and the JS module: web/ beside the package in a source checkout (and an
    editable install), `compact_lm/webpage/` inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for folder in (here.parent / "web", here / "webpage"):
        if (folder / "index.html").is_file():
            return folder
    raise CompactLMError(f"the web page files are missing: neither {here.parent / 'web'} nor {here / 'webpage'} "
                         "holds index.html (reinstall compact-lm)")


def module_files(folder: Path) -> list[str]:
    """compact_lm.js and every module inside `folder` it imports by a relative path (transitively)."""
    if not (folder / MODULE).is_file():
        raise CompactLMError(f"{folder / MODULE} is missing: the page needs the JS module (reinstall compact-lm)")
    found, todo = [], [MODULE]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents or not path.is_file():
            continue   # a path in a comment, say; a real import that is missing shows in the browser test
        found.append(name)
        text = path.read_text(encoding="utf-8")
        base = Path(name).parent
        todo += [os.path.normpath(base / target).replace(os.sep, "/") for target in _RELATIVE_IMPORT.findall(text)]
    return found


# ---------------------------------------------------------------------------------- onnxruntime-web
@dataclass(frozen=True)
class OrtSource:
    """Where the page gets onnxruntime-web: `dist` (a local dist folder to copy from) or the CDN."""

    version: str
    dist: Path | None   # None: loaded from jsDelivr

    @property
    def module_url(self) -> str:
        """What the page imports: a path inside the site, or the pinned jsDelivr URL."""
        if self.dist is not None:
            return f"{ORT_FOLDER}/{ORT_BUNDLE}"
        return CDN_DIST.format(version=self.version) + ORT_BUNDLE

    def describe(self) -> str:
        """One line for the terminal: which runtime and from where."""
        if self.dist is None:
            return (f"onnxruntime-web {self.version}: loaded by the page from {self.module_url} "
                    f"(and the .mjs/.wasm pair beside it); the model and the typed text stay local. For a page "
                    f"that works offline: `cd web && npm ci --ignore-scripts` in the repository, then write "
                    f"the site again (or give --ort-dir)")
        size = sum((self.dist / name).stat().st_size for name in ORT_FILES)
        return (f"onnxruntime-web {self.version}: copied {' + '.join(ORT_FILES)} ({size / 1e6:.1f} MB) "
                f"from {self.dist} into {ORT_FOLDER}/")


def default_ort_dist() -> Path | None:
    """web/node_modules/onnxruntime-web/dist, if `npm ci` has installed it."""
    try:
        dist = web_folder() / "node_modules" / ORT_PACKAGE / "dist"
    except CompactLMError:
        return None
    return dist if dist.is_dir() else None


def pinned_ort_version() -> str:
    """The onnxruntime-web version the JS module is tested with: web/package-lock.json, else web/package.json."""
    try:
        folder = web_folder()
    except CompactLMError:
        return ORT_FALLBACK_VERSION
    try:
        lock = json.loads((folder / "package-lock.json").read_text(encoding="utf-8"))
        version = lock["packages"][f"node_modules/{ORT_PACKAGE}"]["version"]
        if isinstance(version, str) and re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", version):
            return version
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        package = json.loads((folder / "package.json").read_text(encoding="utf-8"))
        wanted = {**package.get("dependencies", {}), **package.get("devDependencies", {})}.get(ORT_PACKAGE, "")
        match = re.fullmatch(r"[\^~=]?(\d+\.\d+\.\d+(-[\w.]+)?)", str(wanted).strip())
        if match:
            return match.group(1)
    except (OSError, ValueError, AttributeError):
        pass
    return ORT_FALLBACK_VERSION


def local_ort(dist: str | os.PathLike) -> OrtSource:
    """A local onnxruntime-web dist folder (or the package folder that holds dist/), checked for the files the page loads."""
    dist = Path(dist)
    if (dist / "dist").is_dir() and not (dist / ORT_BUNDLE).exists():
        dist = dist / "dist"
    if not dist.is_dir():
        raise SettingError("ort_dir", "{ort_dir} {dist} is not a folder: give onnxruntime-web's dist folder "
                                      "(web/node_modules/onnxruntime-web/dist after `npm ci` in web/)", dist=dist)
    missing = [name for name in ORT_FILES if not (dist / name).is_file()]
    if missing:
        raise SettingError("ort_dir", "{ort_dir} {dist} has no {missing}: give the dist folder of {package} 1.19 "
                                      "or later", dist=dist, missing=", ".join(missing), package=ORT_PACKAGE)
    try:
        version = json.loads((dist.parent / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError, TypeError):
        version = "unknown version"
    return OrtSource(str(version), dist.resolve())


def choose_ort(ort_dir: str | os.PathLike | None = None, ort_url: bool = False) -> OrtSource:
    """`ort_dir` if given; else the CDN if `ort_url`; else web/node_modules' copy when present, the CDN otherwise."""
    if ort_dir is not None and ort_url:
        raise CompactLMError("give either --ort-dir or --ort-url, not both")
    if ort_dir is not None:
        return local_ort(ort_dir)
    if not ort_url:
        dist = default_ort_dist()
        if dist is not None:
            return local_ort(dist)
    return OrtSource(pinned_ort_version(), None)


def content_security_policy(ort: OrtSource) -> str:
    """What the page may load and connect to: itself, plus jsDelivr when the runtime comes from there."""
    remote = "" if ort.dist is not None else " " + JSDELIVR
    return "; ".join([
        "default-src 'none'",
        f"script-src 'self' 'wasm-unsafe-eval'{remote}",   # WebAssembly.compile needs 'wasm-unsafe-eval'
        f"connect-src 'self'{remote}",                     # fetch: site.json, the model (and the .wasm)
        "style-src 'self'", "img-src 'self' data:", "base-uri 'none'", "form-action 'none'",
    ])


# -------------------------------------------------------------------------------------- the site folder
def read_site(folder: Path) -> dict | None:
    """The site.json of a folder that holds a compact-lm site, else None."""
    try:
        site = json.loads((folder / SITE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return site if isinstance(site, dict) and site.get("kind") == SITE_KIND else None


def prepare_site_folder(out: Path) -> None:
    """An empty folder, or one that holds a previous site (whose own files are removed); anything else is refused."""
    if out.exists() and not out.is_dir():
        raise SettingError("out_dir", "{out_dir} {out} is a file, not a folder", out=out)
    if out.exists() and any(out.iterdir()):
        site = read_site(out)
        if site is None:
            raise SettingError("out_dir", "{out_dir} {out} is not empty and holds no compact-lm site: "
                                          "choose a new or empty folder", out=out)
        files = site.get("files")
        if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
            raise SettingError("out_dir", "{out_dir} {out}: its {marker} is damaged (\"files\" is not a list of "
                                          "names): remove the folder or choose another", out=out, marker=SITE_MARKER)
        root = out.resolve()
        for name in [*files, SITE_MARKER]:
            path = (out / str(name)).resolve()
            if root in path.parents and path.is_file():   # only files inside the folder that the site listed
                path.unlink()
        runtime = out / ORT_FOLDER
        if runtime.is_dir() and not any(runtime.iterdir()):
            runtime.rmdir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingError("out_dir", "{out_dir} {out}: cannot create the folder ({reason})", out=out,
                           reason=error.strerror or error) from None


def check_model(model: str | os.PathLike, sequence: str | os.PathLike | None):
    """The model opened with compact_lm.open_model and run by onnxruntime as compact-lm checks every model:
    an exported .onnx step graph (and its sequence graph)."""
    from .opener import open_model
    opened = open_model(model, sequence=sequence)
    if opened.format != "onnx":
        raise CompactLMError(f"{model} is a .npz model: the page runs an exported ONNX step graph "
                             f"(compact-lm export {model} --out MODEL.onnx)")
    if opened.graph != "step":
        raise CompactLMError(f"{model} is a {opened.graph} graph: give the step graph "
                             "(and the sequence graph with --sequence)")
    opened.backend()   # onnxruntime opens and runs the graph(s): a damaged file or a mismatched sequence graph fails here
    opened.lexicon     # the page searches it: a damaged one fails here, not in the browser
    return opened


def _read(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CompactLMError(f"cannot read {path}: {error.strerror or error}") from None


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as error:
        raise CompactLMError(f"cannot write {path}: {error.strerror or error}") from None


def _copy(source: Path, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    except OSError as error:
        raise CompactLMError(f"cannot copy {source} to {target}: {error.strerror or error}") from None


def write_site(model: str | os.PathLike, out_dir: str | os.PathLike, *, sequence: str | os.PathLike | None = None,
               ort_dir: str | os.PathLike | None = None, ort_url: bool = False, measured: dict | None = None,
               options: dict | None = None, log=print) -> dict:
    """Write the static site for `model` (an exported .onnx step graph) into `out_dir`; returns its site.json.

    The model is checked with compact_lm.open_model first, and every file it reads is read before the
    folder is touched (so a model inside an earlier site in `out_dir` can be used again). `measured`:
    {"val_bpc": float, "how": str}, a validation bpc measured on this very file, for the model card
    (an int8 file carries only its float source's). `options`: what the page asks for, over PAGE_OPTIONS (same keys)."""
    out = Path(out_dir)
    for name, value in (options or {}).items():
        if name not in PAGE_OPTIONS:
            raise CompactLMError(f"unknown page option {name!r}; the options are {', '.join(PAGE_OPTIONS)}")
        want_bool, least = isinstance(PAGE_OPTIONS[name], bool), 2 if name == "maxChars" else 1
        if isinstance(value, bool) != want_bool or not (want_bool or isinstance(value, int) and value >= least):
            raise CompactLMError(f"page option {name!r} must be {'true or false' if want_bool else f'a whole number >= {least}'}, "
                                 f"got {value!r}")
    opened = check_model(model, sequence)
    ort = choose_ort(ort_dir, ort_url)
    page = web_folder()
    modules = module_files(page)
    model_bytes = _read(model)
    sequence_bytes = None if sequence is None else _read(sequence)
    page_data = {name: _read(page / name) for name in (*PAGE_FILES, *modules)}
    html = page_data["index.html"].decode("utf-8")
    if CSP_PLACEHOLDER not in html:
        raise CompactLMError(f"{page / 'index.html'} has no {CSP_PLACEHOLDER} to fill in (a damaged install?)")
    page_data["index.html"] = html.replace(CSP_PLACEHOLDER, content_security_policy(ort)).encode("utf-8")
    ort_files = [f"{ORT_FOLDER}/{name}" for name in ORT_FILES] if ort.dist is not None else []

    files = [*page_data, MODEL_FILE, *([SEQUENCE_FILE] if sequence_bytes is not None else []), *ort_files]
    meta = opened.metadata()
    site = {
        "kind": SITE_KIND, "version": SITE_VERSION,
        "model": {"file": MODEL_FILE, "name": Path(model).name, "bytes": len(model_bytes)},
        "sequence": None if sequence_bytes is None else
                    {"file": SEQUENCE_FILE, "name": Path(sequence).name, "bytes": len(sequence_bytes)},
        "ort": {"version": ort.version, "module": ort.module_url, "source": "local" if ort.dist else "jsdelivr",
                "num_threads": 1},
        "options": {**PAGE_OPTIONS, **(options or {})},
        "measured": dict(measured) if measured else None,
        "checked": {"cell": meta.get("cell"), "hidden_sizes": meta.get("hidden_sizes"), "int8": bool(meta.get("int8"))},
        "files": files,
    }
    prepare_site_folder(out)
    marker = json.dumps(site, indent=1, ensure_ascii=False).encode("utf-8")
    _write(out / SITE_MARKER, marker)   # first: a half-written site is still recognised as one
    for name, data in page_data.items():
        _write(out / name, data)
    _write(out / MODEL_FILE, model_bytes)
    if sequence_bytes is not None:
        _write(out / SEQUENCE_FILE, sequence_bytes)
    for name in ORT_FILES if ort.dist is not None else ():
        _copy(ort.dist / name, out / ORT_FOLDER / name)
    log(f"wrote the site for {model} ({len(model_bytes):,} bytes, {site['checked']['cell']} "
        f"{'int8' if site['checked']['int8'] else 'fp32'}) into {out}: " + ", ".join(sorted([*files, SITE_MARKER])))
    log(ort.describe())
    return site


# ------------------------------------------------------------------------------------------- serving
# Sent gzip-compressed to a browser that accepts it: the runtime's .wasm is ~12 MB raw and ~3 MB gzipped.
# An .onnx barely compresses (its weights are dense), so it goes as it is.
COMPRESSED = frozenset({".wasm", ".mjs", ".js", ".css", ".html", ".json"})


@functools.lru_cache(maxsize=32)
def _gzipped(path: str, mtime_ns: int, size: int) -> bytes:
    """The gzip of a file's bytes, computed once per version of the file (mtime and size in the key)."""
    return gzip.compress(Path(path).read_bytes(), compresslevel=6, mtime=0)


def site_handler(folder: Path, log):
    """A SimpleHTTPRequestHandler for `folder`: the page's MIME types, gzip for text and WebAssembly,
    no caching, no directory listings."""
    from http.server import SimpleHTTPRequestHandler

    class SiteHandler(SimpleHTTPRequestHandler):
        extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            path = Path(self.translate_path(self.path))
            accepts = "gzip" in self.headers.get("Accept-Encoding", "")
            if not (accepts and path.suffix in COMPRESSED and path.is_file()):
                return super().do_GET()
            try:
                stat = path.stat()
                body = _gzipped(str(path), stat.st_mtime_ns, stat.st_size)
            except OSError:
                return super().do_GET()   # gone or unreadable: the plain handler says so
            self.send_response(200)
            self.send_header("Content-Type", self.guess_type(str(path)))
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Vary", "Accept-Encoding")
            self.end_headers()
            self.wfile.write(body)

        def end_headers(self):
            self.send_header("Cache-Control", "no-cache")   # a site written again shows at the next reload
            self.send_header("X-Content-Type-Options", "nosniff")
            super().end_headers()

        def list_directory(self, path):
            self.send_error(404, "No listing")
            return None

        def log_message(self, format, *args):
            log(f"{self.address_string()} {format % args}")

    return SiteHandler


def make_server(folder: str | os.PathLike, port: int = DEFAULT_PORT, log=print):
    """A threaded HTTP server for the site in `folder` on 127.0.0.1:`port` (0: a free port), not yet serving."""
    from http.server import ThreadingHTTPServer

    class SiteServer(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            error = sys.exc_info()[1]
            if not isinstance(error, ConnectionError):   # a browser that hung up mid-file is no news
                log(f"{client_address[0]} error: {type(error).__name__}: {error}")

    folder = Path(folder)
    if not folder.is_dir():
        raise CompactLMError(f"site folder {folder} does not exist" if not folder.exists()
                             else f"{folder} is a file, not a site folder")
    if not (folder / "index.html").is_file():
        raise CompactLMError(f"{folder} holds no index.html: write a site into a new folder with "
                             "`compact-lm web MODEL.onnx --out SITE` and serve SITE")
    if not 0 <= port <= 65535:
        raise CompactLMError(f"--port must be between 0 and 65535, got {port}")
    try:
        server = SiteServer(("127.0.0.1", port), site_handler(folder.resolve(), log))
    except OSError as error:
        hint = ": choose another --port, or --port 0 for a free one" if port else ""
        raise CompactLMError(f"cannot serve on 127.0.0.1:{port} ({error.strerror or error}){hint}") from None
    return server


def serve(folder: str | os.PathLike, port: int = DEFAULT_PORT, *, log=print, request_log=None) -> None:
    """Serve the site in `folder` on 127.0.0.1 until Ctrl-C; prints the URL (with the real port for --port 0)."""
    server = make_server(folder, port, log=request_log or (lambda line: print(line, file=sys.stderr, flush=True)))
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    log(f"serving {folder} at {url}  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()


# ---------------------------------------------------------------------------------------- commands
def serve_command(folder: str | os.PathLike) -> str:
    """The command that serves a site folder, as the user would type it."""
    import shlex
    return f"compact-lm serve {shlex.quote(str(folder))}"


def configure_web(p) -> None:
    """Options of `compact-lm web`."""
    from .cli import output_path, positive_int, whole_number
    p.add_argument("model", metavar="MODEL.onnx", help="an exported step graph (compact-lm export)")
    p.add_argument("--sequence", metavar="SEQ.onnx", help="its sequence graph, for pasted text (compact-lm export --sequence)")
    p.add_argument("--out", dest="out_dir", type=output_path, required=True, metavar="DIR",
                   help="the site folder: new, empty, or holding an earlier site")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--ort-dir", metavar="DIR",
                        help="copy onnxruntime-web's runtime from this dist folder (default: "
                             "web/node_modules/onnxruntime-web/dist when present)")
    source.add_argument("--ort-url", action="store_true",
                        help="the page loads onnxruntime-web from a pinned jsDelivr URL (the default without a local copy)")
    p.add_argument("-k", "--k", dest="k", type=positive_int, default=PAGE_OPTIONS["suggestions"],
                   help=f"suggestions shown (default {PAGE_OPTIONS['suggestions']})")
    p.add_argument("--beam", type=positive_int, default=PAGE_OPTIONS["beam"],
                   help=f"beam width of the word search (default {PAGE_OPTIONS['beam']})")
    p.add_argument("--max-chars", type=whole_number(2), default=PAGE_OPTIONS["maxChars"],
                   help="longest word completion in characters, counting the boundary that ends it (at least 2; "
                        f"default {PAGE_OPTIONS['maxChars']})")
    p.add_argument("--no-context-cache", dest="context_cache", action="store_false",
                   help='"Learn my words" learns the words alone, without the context cache (faster word starts, '
                        "fewer keystrokes saved)")
    p.set_defaults(run=_cmd_web)


def _cmd_web(args) -> int:
    options = {"suggestions": args.k, "beam": args.beam, "maxChars": args.max_chars, "contextCache": args.context_cache}
    write_site(args.model, args.out_dir, sequence=args.sequence, ort_dir=args.ort_dir, ort_url=args.ort_url,
               options=options)
    print(f"serve it: {serve_command(args.out_dir)}   (then open http://127.0.0.1:{DEFAULT_PORT}/)")
    return 0


def configure_serve(p) -> None:
    """Options of `compact-lm serve`."""
    from .cli import whole_number
    p.add_argument("folder", metavar="DIR", help="a site written by compact-lm web")
    p.add_argument("--port", type=whole_number(0), default=DEFAULT_PORT,
                   help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)")
    p.set_defaults(run=_cmd_serve)


def _cmd_serve(args) -> int:
    serve(args.folder, args.port, log=lambda line: print(line, flush=True))
    return 0
