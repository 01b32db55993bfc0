"""HTTP for scrape: polite, guarded, resumable GET requests.

Client: **httpcore** (the connection engine under httpx, by the same maintainers), used through
its public API.  Chosen over urllib, urllib3 and httpx's own client because two things the crawler
must guarantee need a hook at the socket level, and httpcore gives one publicly:

- *The address guard* sits in a ``NetworkBackend``: every TCP connection, for the first request
  and for every redirect hop, resolves the host itself, refuses private, loopback, link-local,
  multicast and reserved addresses (unless allowed), and then connects to the **checked** address,
  so there is no second DNS look-up between check and connect (no DNS-rebinding gap).  urllib and
  httpx resolve inside the library, after any check we could make; urllib3 needs a subclassed
  private connection method.
- *A total deadline per response*: every socket read goes through our stream wrapper, which
  shortens its timeout to what is left of the response's deadline, so a server that trickles one
  byte a second (in the headers or the body) is cut off at the deadline.  The other clients only
  bound each read, which such a server never trips.

Besides: streamed bodies (the size cap is enforced while reading, whatever ``Content-Length``
says), connection pooling with keep-alive, no automatic redirects (we follow them hop by hop,
each one guarded), no proxy variables from the environment, no transparent decompression, and a
small dependency footprint (h11, certifi).

Politeness: a per-host gate (at most ``per_host`` requests in flight and one start every
``1/rate`` seconds, robots.txt ``Crawl-delay`` honoured), retries with exponential back-off on
network errors, 5xx and 429 (``Retry-After`` honoured up to ``max_wait``; a longer demand is not
retried), a redirect limit with loop detection, and a clear User-Agent.

Caching, two layers:

- :class:`HttpCache` (kept across runs, outside any artifact): the last ``ETag`` and
  ``Last-Modified`` of every URL that answered 200, with the body stored by content hash, so a
  re-scrape sends conditional requests and an unchanged resource costs a 304 and no body.
- A run journal (inside the stage's resumable work folder): every answer this run got, so an
  interrupted run resumes without sending those requests again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import hashlib
import ipaddress
import json
import logging
import socket
import threading
import time
import urllib.parse
import urllib.robotparser
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import httpcore

from stages._common import atomic_write_bytes

log = logging.getLogger("tilegan.scrape")

ROBOTS_AGENT = "tilegan-scrape"
USER_AGENT = f"{ROBOTS_AGENT}/0.2 (tilegan pixel-art tileset builder; obeys robots.txt)"
#: statuses worth another try after a wait
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: robots.txt read at most this far (RFC 9309 asks for at least 500 KiB)
ROBOTS_MAX_BYTES = 512 * 1024
CHUNK = 64 * 1024


class Failure(str, Enum):
    """Why a fetch brought no usable body (the values are scrape's reason codes)."""

    HTTP = "http"                      # a final 4xx / 5xx answer
    REFUSED = "address_refused"        # the address guard said no (before connecting)
    SCHEME = "bad_scheme"              # not http(s)
    TIMEOUT = "timeout"                # connect / idle timeout, or the response deadline
    TOO_LARGE = "too_large"            # over the size cap (declared or streamed)
    REDIRECTS = "redirects"            # a redirect loop or too many redirects
    NETWORK = "network"                # no answer: DNS, refused, reset, protocol error


# --------------------------------------------------------------------------- address guard
class AddressRefused(Exception):
    """A host resolved to an address the policy refuses; raised before any connection."""


def resolve(host: str, port: int) -> list[str]:
    """Every IP address ``host`` resolves to, in resolver order (an IP literal: itself).

    Module-level so that tests can replace it; the guard and the connection both use its answer.
    """
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        ip = str(info[4][0]).split("%", 1)[0]
        if ip not in seen:
            seen.append(ip)
    return seen


def address_kind(ip: str) -> Optional[str]:
    """The kind of a non-public address ("loopback", "private", ...) or None for a public one."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for kind, flag in (("unspecified", addr.is_unspecified), ("loopback", addr.is_loopback),
                       ("link-local", addr.is_link_local), ("multicast", addr.is_multicast),
                       ("private", addr.is_private), ("reserved", addr.is_reserved)):
        if flag:
            return kind
    return None if addr.is_global else "reserved"


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public addresses may be contacted anyway.

    ``allow`` holds networks (``ipaddress`` objects); ``allow_all`` lifts the guard for every
    address.  Public addresses are always allowed.
    """

    allow: tuple[Any, ...] = ()
    allow_all: bool = False

    @classmethod
    def from_strings(cls, items: Sequence[str]) -> "AddressPolicy":
        """``("all",)`` or CIDR strings such as ``("127.0.0.1/32", "192.168.1.0/24")``."""
        if any(s.strip().lower() == "all" for s in items):
            return cls(allow_all=True)
        return cls(allow=tuple(ipaddress.ip_network(s.strip(), strict=False) for s in items))

    def refusal(self, ip: str) -> Optional[str]:
        """Why ``ip`` may not be contacted, or None when it may."""
        kind = address_kind(ip)
        if kind is None or self.allow_all:
            return None
        addr = ipaddress.ip_address(ip)
        if any(addr.version == net.version and addr in net for net in self.allow):
            return None
        return f"a {kind} address"


def check_url(url: str) -> Optional[str]:
    """Why ``url`` cannot be requested at all (scheme, host), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"only http and https URLs are fetched, not {parts.scheme or 'a relative URL'}"
    if not parts.hostname:
        return "the URL has no host"
    return None


# --------------------------------------------------------------------------- deadline
_deadline = threading.local()


def _time_left() -> Optional[float]:
    at = getattr(_deadline, "at", None)
    return None if at is None else at - time.monotonic()


def _clamp(timeout: Optional[float]) -> Optional[float]:
    """``timeout`` shortened to what is left of this thread's response deadline."""
    left = _time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise httpcore.ReadTimeout("the response deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write obeys the current response's deadline."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout))

    def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        self._inner.write(buffer, _clamp(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: Optional[str] = None,
                  timeout: Optional[float] = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with the address guard and the deadline in front of it."""

    def __init__(self, policy: AddressPolicy):
        self.policy = policy
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None,
                    local_address: Optional[str] = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        try:
            ips = resolve(host, port)
        except (OSError, UnicodeError) as e:
            raise httpcore.ConnectError(f"cannot resolve {host} ({e})") from None
        if not ips:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for ip in ips:           # every address must pass: a mixed answer is refused whole
            why = self.policy.refusal(ip)
            if why:
                raise AddressRefused(f"{host} is {why}" if ip == host.strip("[]")
                                     else f"{host} resolves to {ip}, {why}")
        last: Optional[Exception] = None
        for ip in ips:           # connect to the checked address, never to a new look-up
            try:
                stream = self._sockets.connect_tcp(ip, port, _clamp(timeout), local_address,
                                                   socket_options)
                return _DeadlineStream(stream)
            except httpcore.ConnectError as e:
                last = e
        raise last if last else httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(self, path: str, timeout: Optional[float] = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise AddressRefused("unix sockets are never used")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# --------------------------------------------------------------------------- politeness
class HostGate:
    """Per-host politeness: at most ``per_host`` requests in flight, one start per interval."""

    def __init__(self, *, rate: float, per_host: int, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate
        self.per_host = per_host
        self.sleep = sleep
        self.clock = clock
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._interval: dict[str, float] = {}
        self._slots: dict[str, threading.Semaphore] = {}

    @contextlib.contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Wait for ``host``'s turn, then hold one of its in-flight slots."""
        with self._lock:
            sem = self._slots.setdefault(host, threading.Semaphore(self.per_host))
        with sem:
            with self._lock:
                now = self.clock()
                start = max(now, self._next.get(host, now))
                self._next[host] = start + self._interval.get(host, self.interval)
            if start > now:
                self.sleep(start - now)
            yield

    def defer(self, host: str, seconds: float) -> None:
        """Start nothing on ``host`` for ``seconds`` (a 429 / 503 told us to wait)."""
        with self._lock:
            until = self.clock() + seconds
            self._next[host] = max(self._next.get(host, until), until)

    def slow_down(self, host: str, interval: float) -> None:
        """At least ``interval`` seconds between starts on ``host`` (robots.txt Crawl-delay)."""
        with self._lock:
            self._interval[host] = max(self.interval, interval)


def retry_after(value: Optional[str], *, now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Fetched:
    """The outcome of one GET (redirects followed).

    ``sha256`` names the body in the :class:`HttpCache` body store (None: no body).
    """

    url: str
    final_url: str
    status: Optional[int] = None
    content_type: str = ""
    sha256: Optional[str] = None
    failure: Optional[Failure] = None
    message: str = ""
    not_modified: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def answered(self) -> bool:
        """Whether a server gave an answer worth remembering (a rerun need not ask again)."""
        return self.failure not in (Failure.NETWORK, Failure.TIMEOUT)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["failure"] = self.failure.value if self.failure else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Fetched":
        d = dict(d)
        d["failure"] = Failure(d["failure"]) if d.get("failure") else None
        return cls(**{f.name: d.get(f.name, f.default) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class FetchPolicy:
    """Every limit of :class:`Fetcher`; see scrape's ``Params`` for the user-facing names."""

    timeout: float = 20.0          # connect, and longest silence between two reads
    deadline: float = 120.0        # one response, headers and body, in all
    max_bytes: int = 50_000_000
    retries: int = 3
    backoff: float = 1.0           # first retry wait; doubles each time
    max_wait: float = 60.0         # longest single wait, Retry-After included
    rate: float = 2.0              # request starts per second per host
    per_host: int = 2              # requests in flight per host
    max_redirects: int = 5
    connections: int = 8
    address: AddressPolicy = AddressPolicy()
    user_agent: str = USER_AGENT


# --------------------------------------------------------------------------- caches
class HttpCache:
    """Validators and bodies of 200 answers, kept across runs (``<dir>/index.jsonl``, ``bodies/``).

    Bodies are stored once per content hash.  The index is append-only while a run goes on;
    :meth:`compact` keeps the last row per URL and deletes bodies no row names.  Deleting the
    folder is always safe: the next scrape fetches everything again.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.bodies = self.root / "bodies"
        self.bodies.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.jsonl"
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        for row in _read_jsonl(self.index_path):
            if isinstance(row, dict) and row.get("url") and self.has(row.get("sha256")):
                self.entries[row["url"]] = row

    def has(self, sha256: Optional[str]) -> bool:
        return bool(sha256) and (self.bodies / str(sha256)).is_file()

    def read(self, sha256: str) -> bytes:
        return (self.bodies / sha256).read_bytes()

    def put_body(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has(sha):
            atomic_write_bytes(self.bodies / sha, data)
        return sha

    def validators(self, url: str) -> Optional[dict[str, Any]]:
        row = self.entries.get(url)
        if row and (row.get("etag") or row.get("last_modified")) and self.has(row["sha256"]):
            return row
        return None

    def remember(self, url: str, sha256: str, *, etag: str, last_modified: str,
                 content_type: str) -> None:
        if not (etag or last_modified):
            return
        row = {"url": url, "sha256": sha256, "etag": etag, "last_modified": last_modified,
               "content_type": content_type}
        with self._lock:
            self.entries[url] = row
            with open(self.index_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, sort_keys=True) + "\n")

    def compact(self, keep: Sequence[str] = ()) -> None:
        """Rewrite the index (one row per URL) and delete bodies nothing refers to.

        ``keep`` names further bodies to keep (a run journal's).
        """
        with self._lock:
            rows = [self.entries[u] for u in sorted(self.entries)]
            atomic_write_bytes(self.index_path,
                               "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())
            wanted = {r["sha256"] for r in rows} | set(keep)
            for f in self.bodies.iterdir():
                if f.name not in wanted and not f.name.startswith("."):
                    f.unlink(missing_ok=True)


def _read_jsonl(path: Path) -> Iterator[Any]:
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption


# --------------------------------------------------------------------------- the fetcher
@dataclass
class _Answer:
    """One request's answer (no redirect followed)."""

    status: Optional[int] = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: Optional[bytes] = None
    failure: Optional[Failure] = None
    message: str = ""


class Fetcher:
    """GET with the address guard, a deadline, a size cap, retries, politeness and caches.

    Parameters
    ----------
    policy : FetchPolicy
    cache : HttpCache
        Validators and bodies across runs.
    journal : Path, optional
        This run's answers, re-used without a request when an interrupted run resumes.
    sleep : callable
        ``sleep(seconds)``; tests pass a recorder.
    """

    def __init__(self, policy: FetchPolicy, cache: HttpCache, *, journal: Optional[Path] = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.policy = policy
        self.cache = cache
        self.sleep = sleep
        self.gate = HostGate(rate=policy.rate, per_host=policy.per_host, sleep=sleep)
        self.pool = httpcore.ConnectionPool(
            ssl_context=httpcore.default_ssl_context(), max_connections=policy.connections,
            keepalive_expiry=30.0, network_backend=GuardedBackend(policy.address), retries=0)
        self.robots = Robots(self)
        self.journal = journal
        self._lock = threading.Lock()
        self._memo: dict[str, Fetched] = {}
        self._resumed: set[str] = set()
        self.counts = {"requests": 0, "not_modified": 0, "resumed": 0, "retries": 0}
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            for row in _read_jsonl(journal):
                try:
                    f = Fetched.from_json(row)
                except (TypeError, ValueError, KeyError):
                    continue
                if f.sha256 is None or cache.has(f.sha256):
                    self._memo[f.url] = f
            self._resumed = set(self._memo)

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def body(self, fetched: Fetched) -> bytes:
        return self.cache.read(fetched.sha256) if fetched.sha256 else b""

    # ------------------------------------------------------------------ one URL
    def get(self, url: str, *, max_bytes: Optional[int] = None) -> Fetched:
        """GET ``url``, following redirects hop by hop; never raises for network trouble."""
        with self._lock:
            hit = self._memo.get(url)
            if hit is not None:
                if url in self._resumed:
                    self._resumed.discard(url)
                    self.counts["resumed"] += 1
                return hit
        result = self._follow(url, max_bytes or self.policy.max_bytes)
        if result.answered:
            with self._lock:
                self._memo[url] = result
                if self.journal is not None:
                    with open(self.journal, "a", encoding="utf-8") as f:
                        f.write(json.dumps(result.to_json(), sort_keys=True) + "\n")
        return result

    def _follow(self, url: str, max_bytes: int) -> Fetched:
        seen = [url]
        current = url
        for _hop in range(self.policy.max_redirects + 1):
            why = check_url(current)
            if why:
                return Fetched(url, current, failure=Failure.SCHEME, message=why)
            ans = self._with_retries(current, max_bytes)
            if ans.failure is not None:
                return Fetched(url, current, ans.status, failure=ans.failure, message=ans.message)
            if ans.status in REDIRECT_STATUSES and ans.headers.get("location"):
                nxt, _ = urllib.parse.urldefrag(urllib.parse.urljoin(current,
                                                                     ans.headers["location"]))
                if nxt in seen:
                    return Fetched(url, current, ans.status, failure=Failure.REDIRECTS,
                                   message=f"redirect loop ({' -> '.join(seen + [nxt])})")
                seen.append(nxt)
                current = nxt
                continue
            ctype = ans.headers.get("content-type", "")
            if ans.status == 304:
                row = self.cache.entries.get(current)
                if row is None:  # a 304 to a request we did not make conditional
                    return Fetched(url, current, 304, failure=Failure.HTTP,
                                   message="HTTP 304 without a cached copy")
                with self._lock:
                    self.counts["not_modified"] += 1
                return Fetched(url, current, 200, row.get("content_type", ""), row["sha256"],
                               not_modified=True)
            if ans.status is None or ans.status >= 400 or ans.status < 200:
                return Fetched(url, current, ans.status, ctype, failure=Failure.HTTP,
                               message=ans.message or f"HTTP {ans.status}")
            if ans.status in REDIRECT_STATUSES or 300 <= ans.status < 400:
                return Fetched(url, current, ans.status, ctype, failure=Failure.HTTP,
                               message=f"HTTP {ans.status} without a usable Location")
            sha = self.cache.put_body(ans.body or b"")
            self.cache.remember(current, sha, etag=ans.headers.get("etag", ""),
                                last_modified=ans.headers.get("last-modified", ""),
                                content_type=ctype)
            return Fetched(url, current, ans.status, ctype, sha)
        return Fetched(url, current, failure=Failure.REDIRECTS,
                       message=f"more than max_redirects={self.policy.max_redirects} redirects")

    def _with_retries(self, url: str, max_bytes: int) -> _Answer:
        host = (urllib.parse.urlsplit(url).netloc or "").lower()
        p = self.policy
        for attempt in range(p.retries + 1):
            with self.gate.slot(host):
                ans = self._once(url, max_bytes)
            retry = ans.status in RETRY_STATUSES or (
                ans.failure is Failure.NETWORK and "resolve" not in ans.message) or (
                ans.failure is Failure.TIMEOUT and "deadline" not in ans.message)
            if not retry or attempt == p.retries:
                return ans
            wait = min(p.backoff * (2 ** attempt), p.max_wait)
            asked = retry_after(ans.headers.get("retry-after")) if ans.status in (429, 503) else None
            if asked is not None:
                if asked > p.max_wait:
                    ans.message += (f" (the server asks to wait {asked:g} s, more than "
                                    f"max_wait={p.max_wait:g})")
                    return ans
                wait = asked
            with self._lock:
                self.counts["retries"] += 1
            log.debug("%s: %s; retry %d in %.2f s", url, ans.message, attempt + 1, wait)
            self.gate.defer(host, wait)
        return ans  # pragma: no cover (the loop always returns)

    def _once(self, url: str, max_bytes: int) -> _Answer:
        p = self.policy
        headers = [("User-Agent", p.user_agent), ("Accept", "*/*"),
                   ("Accept-Encoding", "identity")]
        known = self.cache.validators(url)
        if known:
            if known.get("etag"):
                headers.append(("If-None-Match", known["etag"]))
            if known.get("last_modified"):
                headers.append(("If-Modified-Since", known["last_modified"]))
        timeouts = {"connect": p.timeout, "read": p.timeout, "write": p.timeout, "pool": p.deadline}
        with self._lock:
            self.counts["requests"] += 1
        _deadline.at = time.monotonic() + p.deadline
        try:
            with self.pool.stream("GET", url, headers=headers,
                                  extensions={"timeout": timeouts}) as resp:
                hdrs = {k.decode("latin-1").lower(): v.decode("latin-1").strip()
                        for k, v in resp.headers}
                ans = _Answer(resp.status, hdrs)
                if resp.status != 200 and not (200 < resp.status < 300):
                    reason = resp.extensions.get("reason_phrase", b"").decode("latin-1", "replace")
                    ans.message = f"HTTP {resp.status} {reason}".strip()
                    return ans
                declared = hdrs.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    return _too_large(ans, max_bytes, int(declared))
                chunks, total = [], 0
                for chunk in resp.iter_stream():
                    total += len(chunk)
                    if total > max_bytes:
                        return _too_large(ans, max_bytes)
                    chunks.append(chunk)
                ans.body = b"".join(chunks)
                return ans
        except AddressRefused as e:
            return _Answer(failure=Failure.REFUSED, message=f"refused: {e} (see --allow-private)")
        except httpcore.TimeoutException:
            left = _time_left()
            if left is not None and left <= 0.05:
                return _Answer(failure=Failure.TIMEOUT,
                               message=f"no complete answer within the deadline of {p.deadline:g} s")
            return _Answer(failure=Failure.TIMEOUT, message=f"no answer for {p.timeout:g} s")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                OSError) as e:
            return _Answer(failure=Failure.NETWORK, message=str(e) or type(e).__name__)
        finally:
            _deadline.at = None


def _too_large(ans: _Answer, max_bytes: int, declared: Optional[int] = None) -> _Answer:
    size = f" ({declared / 1e6:.2f} MB)" if declared else ""
    ans.failure = Failure.TOO_LARGE
    ans.message = f"larger than max_mb={max_bytes / 1e6:g}{size}"
    return ans


# --------------------------------------------------------------------------- robots.txt
class Robots:
    """robots.txt per origin, fetched through the same guarded fetcher (RFC 9309 rules:
    a 4xx answer allows everything; a 5xx or no answer disallows everything on that host)."""

    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher
        self._parsers: dict[str, Optional[urllib.robotparser.RobotFileParser]] = {}
        self._lock = threading.Lock()
        self._origin_locks: dict[str, threading.Lock] = {}

    def allowed(self, url: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            lock = self._origin_locks.setdefault(origin, threading.Lock())
        with lock:
            if origin not in self._parsers:
                self._parsers[origin] = self._load(origin, parts.netloc.lower())
        rp = self._parsers[origin]
        return False if rp is None else rp.can_fetch(ROBOTS_AGENT, url)

    def _load(self, origin: str, host: str) -> Optional[urllib.robotparser.RobotFileParser]:
        f = self.fetcher.get(origin + "/robots.txt", max_bytes=ROBOTS_MAX_BYTES)
        rp = urllib.robotparser.RobotFileParser()
        if f.ok:
            text = self.fetcher.body(f).decode("utf-8", errors="replace")
            rp.parse(text.splitlines())
            delay = rp.crawl_delay(ROBOTS_AGENT)
            if delay:
                self.fetcher.gate.slow_down(host, min(float(delay), self.fetcher.policy.max_wait))
            return rp
        if f.failure is Failure.HTTP and f.status is not None and 400 <= f.status < 500:
            rp.parse([])
            return rp
        if f.failure in (Failure.TOO_LARGE, Failure.REFUSED, Failure.SCHEME):
            rp.parse([])     # refused hosts: the request itself is refused, with that reason
            return rp
        log.warning("%s/robots.txt: %s; nothing else on that host is fetched", origin,
                    f.message or "no answer")
        return None
