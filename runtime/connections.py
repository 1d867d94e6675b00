"""The kernel's connection manager: the run's open network connections, by ``connection_id``.

``connection:open`` and ``connection:listen`` register the sockets they open here, and
``ssh:connect`` its SSH clients; the other ``connection:*`` and ``ssh:*`` modules reach them by id
through ``ctx.connections()`` (``connection:close`` closes either kind).
A connection belongs to the run, not to the workload that opened it: a listener's accepted
connection is read and answered by the ``event_driven`` instance its record starts.

Bounds:

- at most ``GXO_MAX_CONNECTIONS`` connections are open at once (default 1024); one more is a
  clear error (a listener closes the connection it cannot register and keeps serving);
- a connection with no traffic for ``GXO_CONNECTION_IDLE_TIMEOUT`` (a duration, default
  ``5m``; ``0`` turns it off) is closed, and using its id afterwards says why (an SSH
  connection is idle when no module uses it: a long remote command keeps it in use);
- every connection and listening socket is closed when the run ends, however it ends (last
  step of the kernel's shutdown: the run's end, SIGTERM, a failure that halts it).

The manager is made on first use: a run without connections pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections import OrderedDict
from typing import Any

from gxo.runtime.module import ModuleError

ENV_LIMIT = "GXO_MAX_CONNECTIONS"
ENV_IDLE = "GXO_CONNECTION_IDLE_TIMEOUT"
DEFAULT_LIMIT = 1024
DEFAULT_IDLE_TIMEOUT = 300.0
#: ``connection:read`` without ``read_bytes``/``read_until`` (read until the peer closes), or a
#: delimiter not found yet, fails past this many bytes instead of growing without bound
MAX_READ = 16 * 1024 * 1024
#: datagrams a UDP socket keeps for reading before it drops new ones
UDP_QUEUE = 1024
#: closed ids remembered with the reason, for the error of a later use
_REMEMBER_CLOSED = 4096


class ConnectionLimitError(ModuleError):
    """The run holds as many connections as it may."""


def format_addr(addr: Any) -> str:
    """``host:port`` (``[v6]:port``) of a socket address."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


def split_addr(address: str, *, listen: bool = False) -> tuple[str | None, int]:
    """``host:port`` to ``(host, port)``; an empty host is every interface when listening
    (``":8080"``, as in Go) and the local host when dialling."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ModuleError(f"address {address!r} is not host:port (e.g. \"127.0.0.1:8080\" or \":8080\")")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return (None if listen else "127.0.0.1"), int(port_text)
    return host, int(port_text)


class Connection:
    """One open connection: a byte buffer filled by ``_more`` and the bounded read rules of
    ``connection:read``."""

    kind = "tcp"

    def __init__(self, local_addr: str, remote_addr: str) -> None:
        self.id = ""
        self.local_addr = local_addr
        self.remote_addr = remote_addr
        self.buf = bytearray()
        self.last_used = time.monotonic()
        self.closed_reason: str | None = None
        self.reading = False
        #: modules using it right now (the idle timeout spares a connection in use)
        self.busy = 0

    # -- transport-specific ------------------------------------------------------------------

    async def _more(self) -> bytes:
        """The next bytes that arrive; ``b""`` when the peer has closed."""
        raise NotImplementedError

    async def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    async def _wait_closed(self) -> None:
        return None

    # -- what the modules use -----------------------------------------------------------------

    def lost(self) -> str | None:
        """Why the connection ended by itself (the peer or the network closed it), or None
        while it is up; the manager then forgets it."""
        return None

    def _check_open(self) -> None:
        if self.closed_reason is not None:
            raise ModuleError(f"connection '{self.id}' is closed ({self.closed_reason})")

    async def read(self, read_bytes: int | None, until: bytes | None, timeout: float | None) -> bytes:
        self._check_open()
        if self.reading:
            raise ModuleError(f"connection '{self.id}' is being read by another workload: one read at a time")
        self.reading = True
        try:
            return await self._timed_read(read_bytes, until, timeout)
        finally:
            self.reading = False

    async def _timed_read(self, read_bytes: int | None, until: bytes | None, timeout: float | None) -> bytes:
        try:
            if timeout is None:
                return await self._read(read_bytes, until)
            async with asyncio.timeout(timeout):
                return await self._read(read_bytes, until)
        except TimeoutError:
            got = len(self.buf)
            want = (f"{read_bytes} bytes" if read_bytes is not None and until is None
                    else f"the delimiter {until.decode('utf-8', 'replace')!r}" if until is not None
                    else "the peer to close")
            raise ModuleError(f"read timed out after {timeout:g}s waiting for {want} from {self.remote_addr} "
                              f"({got} byte(s) received); the peer sent nothing more in time") from None

    async def _read(self, n: int | None, until: bytes | None) -> bytes:
        buf = self.buf
        scanned = 0  # bytes already searched for the delimiter (each byte is searched once)
        while True:
            if until is not None:
                i = buf.find(until, max(0, scanned - len(until) + 1))
                scanned = len(buf)
                if i >= 0 and (n is None or i + len(until) <= n):
                    return self._take(i + len(until))
            if n is not None and len(buf) >= n:
                return self._take(n)
            if self.kind == "udp" and n is None and until is None and buf:
                return self._take(len(buf))  # a datagram is a message: one read, one datagram
            if len(buf) > MAX_READ:
                raise ModuleError(f"read stopped: more than {MAX_READ} bytes from {self.remote_addr} without the "
                                  "end asked for (set read_bytes or read_until)")
            self._check_open()
            chunk = await self._more()
            self._check_open()
            if not chunk:
                if n is None and until is None:
                    return self._take(len(buf))
                want = f"the delimiter {until.decode('utf-8', 'replace')!r}" if until is not None else f"{n} bytes"
                raise ModuleError(f"the peer {self.remote_addr} closed the connection before {want} arrived "
                                  f"({len(buf)} byte(s) received)")
            self.last_used = time.monotonic()
            buf += chunk

    def _take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        self.last_used = time.monotonic()
        return data

    async def write(self, data: bytes) -> int:
        self._check_open()
        try:
            await self._send(data)
        except (ConnectionError, OSError) as exc:
            raise ModuleError(f"write to {self.remote_addr} failed: {exc.strerror or exc}") from None
        self.last_used = time.monotonic()
        return len(data)

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            try:
                self._close()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass


class TcpConnection(Connection):
    kind = "tcp"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(format_addr(writer.get_extra_info("sockname")), format_addr(writer.get_extra_info("peername")))
        self.reader = reader
        self.writer = writer

    async def _more(self) -> bytes:
        try:
            return await self.reader.read(65536)
        except (ConnectionError, OSError):
            return b""  # reset by the peer: it has closed

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def _close(self) -> None:
        self.writer.close()

    async def _wait_closed(self) -> None:
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except Exception:  # noqa: BLE001 - already reset or slow to close: the fd is released anyway
            pass


class DatagramQueue(asyncio.DatagramProtocol):
    """A UDP socket's received datagrams, bounded (new ones are dropped when it is full)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue(UDP_QUEUE)
        self.dropped = 0
        self.error: OSError | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.queue.put_nowait((data, addr))
        except asyncio.QueueFull:
            self.dropped += 1

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):  # e.g. ICMP port unreachable: the next read reports it
            self.error = exc
            if not self.queue.full():
                self.queue.put_nowait((b"", None))


class UdpConnection(Connection):
    """A dialled UDP socket (``connection:open``): writes go to the peer, reads return the
    datagrams it sends back."""

    kind = "udp"

    def __init__(self, transport: asyncio.DatagramTransport, proto: DatagramQueue) -> None:
        super().__init__(format_addr(transport.get_extra_info("sockname")),
                         format_addr(transport.get_extra_info("peername")))
        self.transport = transport
        self.proto = proto

    async def _more(self) -> bytes:
        while True:
            data, _ = await self.proto.queue.get()
            if self.proto.error is not None:
                err, self.proto.error = self.proto.error, None
                raise ModuleError(f"UDP peer {self.remote_addr}: {err.strerror or err}")
            if data:  # an empty datagram carries nothing to read
                return data

    async def _send(self, data: bytes) -> None:
        self.transport.sendto(data)

    def _close(self) -> None:
        self.transport.close()


class UdpPeer(Connection):
    """One datagram received by a UDP listener, as a connection: reading returns the datagram,
    writing answers its sender through the listener's socket (which stays the listener's)."""

    kind = "udp"

    def __init__(self, transport: asyncio.DatagramTransport, addr: Any, data: bytes) -> None:
        super().__init__(format_addr(transport.get_extra_info("sockname")), format_addr(addr))
        self.transport = transport
        self.addr = addr
        self.buf += data

    async def _more(self) -> bytes:
        return b""  # the datagram is all there is

    async def _send(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionError("the listener has stopped")
        self.transport.sendto(data, self.addr)

    def _close(self) -> None:
        pass


class ClientConnection(Connection):
    """A connection its protocol's modules use through a client object (``ssh:connect``'s
    asyncssh connection) rather than as bytes: ``connection:read`` and ``connection:write``
    refuse it.  ``use()`` lends the client to one module at a time per slot (``slots`` at once;
    the others wait their turn) and marks the connection busy meanwhile."""

    def __init__(self, kind: str, client: Any, local_addr: str, remote_addr: str, *,
                 what: str, used_by: str, where: str, slots: int) -> None:
        super().__init__(local_addr, remote_addr)
        self.kind = kind
        self.where = where  # how messages name it: "ssh user@host:22"
        self.client = client
        self.what = what  # "an SSH connection (from ssh:connect)"
        self.used_by = used_by  # the modules that take it
        self.slots = asyncio.Semaphore(slots)

    def lost(self) -> str | None:
        if self.client.is_closed() and self.closed_reason is None:
            return f"the {self.kind.upper()} server or the network closed it"
        return None

    def _refuse(self) -> ModuleError:
        return ModuleError(f"connection '{self.id}' is {self.what}: use it with {self.used_by} "
                           "(connection:read and connection:write take TCP and UDP connections)")

    async def read(self, read_bytes: int | None, until: bytes | None, timeout: float | None) -> bytes:
        raise self._refuse()

    async def write(self, data: bytes) -> int:
        raise self._refuse()

    @contextlib.asynccontextmanager
    async def use(self) -> Any:
        self._check_open()
        self.busy += 1
        try:
            async with self.slots:
                self._check_open()
                self.last_used = time.monotonic()
                yield self.client
        finally:
            self.busy -= 1
            self.last_used = time.monotonic()

    def _close(self) -> None:
        self.client.close()

    async def _wait_closed(self) -> None:
        try:
            await asyncio.wait_for(self.client.wait_closed(), 2.0)
        except Exception:  # noqa: BLE001 - the socket is released anyway
            pass


class ConnectionManager:
    """The run's open connections and listening sockets."""

    def __init__(self, limit: int = DEFAULT_LIMIT, idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT) -> None:
        self.limit = limit
        self.idle_timeout = idle_timeout or None
        self.conns: dict[str, Connection] = {}
        self.closed: OrderedDict[str, str] = OrderedDict()
        self.listeners: list[Any] = []
        self.opened = 0
        self._reaper: asyncio.Task[None] | None = None
        self._shut = False

    @classmethod
    def from_env(cls) -> ConnectionManager:
        from gxo.runtime.durations import parse_duration

        limit, idle = DEFAULT_LIMIT, DEFAULT_IDLE_TIMEOUT
        text = os.environ.get(ENV_LIMIT)
        if text:
            try:
                limit = max(1, int(text))
            except ValueError:
                raise ModuleError(f"{ENV_LIMIT}={text!r} is not a number of connections") from None
        text = os.environ.get(ENV_IDLE)
        if text:
            try:
                idle = parse_duration(text)
            except ValueError:
                raise ModuleError(f"{ENV_IDLE}={text!r} is not a duration such as \"5m\" (\"0\": no idle "
                                  "timeout)") from None
        return cls(limit, idle)

    # -- registry -----------------------------------------------------------------------------

    def add(self, conn: Connection) -> str:
        if self._shut:
            conn.close("the run has ended")
            raise ModuleError("the run is ending: no new connection is registered")
        self._prune()
        if len(self.conns) >= self.limit:
            conn.close("connection limit reached")
            raise self._limit_error()
        cid = "conn-" + secrets.token_hex(8)
        conn.id = cid
        self.conns[cid] = conn
        self.opened += 1
        if self.idle_timeout is not None and self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="gxo-connection-reaper")
        return cid

    def _limit_error(self) -> ConnectionLimitError:
        return ConnectionLimitError(
            f"connection limit reached: {self.limit} connections are open in this run; close the ones "
            f"you are done with (connection:close) or raise {ENV_LIMIT}")

    def _prune(self) -> None:
        """Forget the connections that ended by themselves: they no longer count."""
        for conn in list(self.conns.values()):
            reason = conn.lost()
            if reason is not None:
                self._forget(conn, reason)

    def check_room(self) -> None:
        """Fail as ``add`` would when the run holds as many connections as it may (before a
        costly connection is set up)."""
        self._prune()
        if self._shut:
            raise ModuleError("the run is ending: no new connection is registered")
        if len(self.conns) >= self.limit:
            raise self._limit_error()

    def get(self, cid: str, kind: str | None = None, wanted: str = "") -> Connection:
        """The open connection ``cid``; with ``kind``, one of that kind (``wanted`` says which,
        for the error)."""
        conn = self.conns.get(cid)
        lost = conn.lost() if conn is not None else None
        if conn is not None and lost is not None:
            self._forget(conn, lost)
        elif conn is not None:
            if kind is not None and conn.kind != kind:
                what = conn.what if isinstance(conn, ClientConnection) else \
                    f"a {conn.kind.upper()} connection (from connection:open or connection:listen)"
                raise ModuleError(f"connection '{cid}' is {what}, not {wanted or kind}")
            return conn
        reason = self.closed.get(cid)
        if reason is not None:
            raise ModuleError(f"connection '{cid}' is closed ({reason})")
        raise ModuleError(f"connection '{cid}' not found: no connection with this id is open in this run "
                          "(ids come from connection:open, connection:listen or ssh:connect, and a "
                          "connection ends with its run)")

    def close(self, cid: str, reason: str = "closed by connection:close") -> Connection:
        conn = self.get(cid)
        self._forget(conn, reason)
        return conn

    def detach(self, cid: str, to: str = "http:listen") -> TcpConnection:
        """Hand TCP connection ``cid`` over to a server module (``to``) that owns it from now on:
        it leaves the registry (and its limit and idle timeout) without being closed."""
        conn = self.get(cid)
        if not isinstance(conn, TcpConnection):
            raise ModuleError(f"connection '{cid}' is {conn.kind}: {to} serves TCP connections only")
        if conn.reading:
            raise ModuleError(f"connection '{cid}' is being read by another workload")
        self.conns.pop(cid, None)
        self.closed[cid] = f"handed over to {to}"
        while len(self.closed) > _REMEMBER_CLOSED:
            self.closed.popitem(last=False)
        return conn

    def _forget(self, conn: Connection, reason: str) -> None:
        conn.close(reason)
        self.conns.pop(conn.id, None)
        self.closed[conn.id] = reason
        while len(self.closed) > _REMEMBER_CLOSED:
            self.closed.popitem(last=False)

    def listening(self, closeable: Any) -> None:
        """A listening socket or transport, closed with the run."""
        self.listeners.append(closeable)

    def unlisten(self, closeable: Any) -> None:
        try:
            self.listeners.remove(closeable)
        except ValueError:
            pass
        try:
            closeable.close()
        except Exception:  # noqa: BLE001
            pass

    # -- idle timeout and the run's end ---------------------------------------------------------

    async def _reap(self) -> None:
        assert self.idle_timeout is not None
        every = min(1.0, self.idle_timeout / 4)
        while True:
            await asyncio.sleep(every)
            self._prune()
            now = time.monotonic()
            for conn in [c for c in self.conns.values()
                         if not c.busy and now - c.last_used >= self.idle_timeout]:
                self._forget(conn, f"idle for {self.idle_timeout:g}s: no data in either direction "
                                   f"({ENV_IDLE})")

    async def close_all(self) -> None:
        self._shut = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        conns = list(self.conns.values())
        for conn in conns:
            self._forget(conn, "the run has ended")
        for lst in self.listeners:
            try:
                lst.close()
            except Exception:  # noqa: BLE001
                pass
        self.listeners.clear()
        await asyncio.gather(*(c._wait_closed() for c in conns), return_exceptions=True)


def tcp_listen_socket(host: str | None, port: int) -> socket.socket:
    """A non-blocking listening TCP socket (SO_REUSEADDR: a restarted listener binds at once)."""
    if host is None:
        family, addr = socket.AF_INET, ("0.0.0.0", port)
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
