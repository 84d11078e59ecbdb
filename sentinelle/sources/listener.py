"""Live syslog intake for IHE ATNA: RFC 5424 over TCP (RFC 6587 framing), TLS (RFC 5425) and UDP (RFC 5426).

Audit repositories receive ATNA messages as they happen: each DICOM audit XML (or FHIR
AuditEvent JSON) message is one syslog frame. Over TCP and TLS a frame is octet-counted
(`LEN SP MSG`, what TLS senders and multi-line XML need) or ends at a newline; both are
accepted on the same port, even mixed, by the same `FrameSplitter` the file reader uses,
and each frame goes through the same `parse_frame`, so a live message and a captured one
become the same `AccessEvent`.

Backpressure: the listener hands each read's events to `sink` (the service's intake
queue) and does not read the socket again until the sink took them. When the queue is
full the sink waits, the listener stops reading, the kernel's receive buffer fills and
TCP flow control slows the sender: nothing accepted is dropped. UDP has no flow
control: datagrams wait in a bounded buffer (`udp_buffer`) and those that arrive when it
is full are counted in `stats.udp_dropped`, as the kernel would drop them anyway; use TCP
or TLS when every message matters.

Frames that are no audit message go to the quarantine with where they came from (the
peer's address and the byte offset in the connection) and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sentinelle.errors import RecordError
from sentinelle.events import AccessEvent
from sentinelle.sources.quarantine import Quarantine
from sentinelle.sources.syslog import MAX_FRAME_BYTES, Frame, FrameSplitter, parse_frame

__all__ = ["ListenerStats", "Sink", "SyslogListener"]

log = logging.getLogger("sentinelle.listener")

#: Where the listener hands events: returns once they are queued (waits while the queue is full).
Sink = Callable[[list[AccessEvent], str], Awaitable[object]]

_OCTET_PREFIX = re.compile(rb"\d{1,9} (?=<\d{1,3}>)")


@dataclass
class ListenerStats:
    """Counters of one listener since it started."""

    connections: int = 0
    open_connections: int = 0
    refused_connections: int = 0
    bytes: int = 0
    frames: int = 0
    events: int = 0
    rejected: int = 0
    datagrams: int = 0
    udp_dropped: int = 0


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SyslogListener) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # pragma: no cover - ICMP errors on a receiver
        log.warning("The UDP syslog socket reported %s.", type(exc).__name__)


class SyslogListener:
    """Listens for syslog frames on TCP, TLS and UDP ports and passes their events to `sink`.

    Ports given as 0 are chosen by the system; `ports` tells which were bound.
    """

    def __init__(
        self,
        sink: Sink,
        quarantine: Quarantine,
        *,
        host: str = "127.0.0.1",
        tcp_port: int | None = None,
        tls_port: int | None = None,
        udp_port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_frame: int = MAX_FRAME_BYTES,
        read_size: int = 1 << 16,
        udp_buffer: int = 10_000,
        max_connections: int = 1000,
    ) -> None:
        if tls_port is not None and ssl_context is None:
            raise ValueError("a TLS syslog port needs an ssl_context (certificate and key)")
        self.sink = sink
        self.quarantine = quarantine
        self.host = host
        self.tcp_port = tcp_port
        self.tls_port = tls_port
        self.udp_port = udp_port
        self.ssl_context = ssl_context
        self.max_frame = max_frame
        self.read_size = read_size
        self.udp_buffer = udp_buffer
        self.max_connections = max_connections
        self.stats = ListenerStats()
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_pending: deque[tuple[bytes, str]] = deque()
        self._udp_wakeup = asyncio.Event()
        self._udp_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # XML parsing is CPU work in C; a thread keeps the event loop (HTTP intake) responsive.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentinelle-syslog-parse")
        self._closing = False

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the configured ports and start accepting."""
        loop = asyncio.get_running_loop()
        if self.tcp_port is not None:
            server = await asyncio.start_server(self._handle, self.host, self.tcp_port, limit=self.read_size * 2)
            self._servers.append(server)
            self.ports["tcp"] = server.sockets[0].getsockname()[1]
        if self.tls_port is not None:
            server = await asyncio.start_server(self._handle, self.host, self.tls_port, ssl=self.ssl_context,
                                                limit=self.read_size * 2, ssl_handshake_timeout=10.0)
            self._servers.append(server)
            self.ports["tls"] = server.sockets[0].getsockname()[1]
        if self.udp_port is not None:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self),
                                                               local_addr=(self.host, self.udp_port))
            self._udp = transport
            self.ports["udp"] = transport.get_extra_info("sockname")[1]
            self._udp_task = asyncio.create_task(self._udp_consumer())
        if self.ports:
            log.info("Syslog listener on %s: %s.", self.host,
                     ", ".join(f"{k} {v}" for k, v in sorted(self.ports.items())))

    async def stop(self) -> None:
        """Stop accepting, let open connections hand over what they read, then close."""
        self._closing = True
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=30)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        if self._udp is not None:
            self._udp.close()
        if self._udp_task is not None:
            self._udp_wakeup.set()
            await asyncio.wait([self._udp_task], timeout=30)
        self._executor.shutdown(wait=True)

    # ---- TCP and TLS -------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        secure = writer.get_extra_info("sslcontext") is not None
        origin = f"syslog-{'tls' if secure else 'tcp'} {_peer(peer)}"
        st = self.stats
        if st.open_connections >= self.max_connections or self._closing:
            st.refused_connections += 1
            writer.close()
            return
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        st.connections += 1
        st.open_connections += 1
        splitter = FrameSplitter(self.max_frame)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    data = await reader.read(self.read_size)
                except (ConnectionError, ssl.SSLError, OSError):
                    data = b""
                frames = splitter.feed(data) if data else splitter.close()
                st.bytes += len(data)
                if frames:
                    events = await loop.run_in_executor(self._executor, self._parse, frames, origin)
                    if events:
                        # Not reading again until the sink took these: TCP flow control.
                        await self.sink(events, origin)
                if not data:
                    break
        finally:
            st.open_connections -= 1
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    def _parse(self, frames: list[Frame], origin: str) -> list[AccessEvent]:
        out: list[AccessEvent] = []
        st = self.stats
        for frame in frames:
            location = f"offset {frame.offset}"
            if frame.error:
                st.rejected += 1
                self.quarantine.reject(origin, location, frame.error, frame.data)
                continue
            st.frames += 1
            try:
                out.append(parse_frame(frame.data, origin, location))
            except RecordError as exc:
                st.rejected += 1
                self.quarantine.reject(origin, location, exc.reason, frame.data)
        st.events += len(out)
        return out

    # ---- UDP ---------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        st = self.stats
        st.datagrams += 1
        st.bytes += len(data)
        if len(self._udp_pending) >= self.udp_buffer:
            st.udp_dropped += 1
            return
        self._udp_pending.append((data, _peer(addr)))
        self._udp_wakeup.set()

    async def _udp_consumer(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._udp_pending
        while True:
            if not pending:
                if self._closing:
                    return
                self._udp_wakeup.clear()
                await self._udp_wakeup.wait()
                continue
            batch = [pending.popleft() for _ in range(min(len(pending), 1000))]
            events = await loop.run_in_executor(self._executor, self._parse_datagrams, batch)
            if events:
                await self.sink(events, "syslog-udp")

    def _parse_datagrams(self, batch: list[tuple[bytes, str]]) -> list[AccessEvent]:
        out: list[AccessEvent] = []
        st = self.stats
        for data, peer in batch:
            origin = f"syslog-udp {peer}"
            # RFC 5426 has no framing; some senders still put an octet count first.
            m = _OCTET_PREFIX.match(data)
            frame = data[m.end():] if m is not None else data
            frame = frame.rstrip(b"\r\n\x00")
            st.frames += 1
            try:
                out.append(parse_frame(frame, origin, "datagram"))
            except RecordError as exc:
                st.rejected += 1
                self.quarantine.reject(origin, "datagram", exc.reason, frame)
        st.events += len(out)
        return out


def _peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if isinstance(host, str) and ":" in host else f"{host}:{port}"
    return str(peer or "?")
