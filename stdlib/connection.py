"""``connection:*`` (L2): raw TCP/UDP sockets held by the kernel's connection manager and
referenced by ``connection_id``."""

from __future__ import annotations

import errno

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

_NETWORK = ("tcp", "udp")
_ENCODINGS = ("string", "base64", "hex")
#: connection:read and connection:write take byte streams, not ssh:connect's SSH connections
_BYTES_ID = "Id of a connection opened by connection:open or connection:listen."

OPEN = ModuleSpec(
    name="connection:open",
    layer="L2",
    description="Dial an outbound TCP or UDP connection and register it with the kernel.",
    params_schema=s.params(
        {
            "network": s.enum("Transport.", _NETWORK),
            "address": s.address("Remote address, host:port."),
            "timeout": s.duration("Dial timeout (default: the operating system's)."),
        },
        required=("network", "address"),
    ),
    summary_schema=s.summary(
        {
            "connection_id": s.string("Id of the new connection."),
            "local_addr": s.string("Local address, host:port."),
            "remote_addr": s.string("Remote address, host:port."),
        },
        dry_run=True,
    ),
    logged_params=("address",),  # echoed as remote_addr and in logs
)

LISTEN = ModuleSpec(
    name="connection:listen",
    layer="L2",
    description="Bind a local address and emit one record per accepted connection, until "
    "cancelled.",
    # A server: supervised, and the source of event_driven handlers (design.md §10).
    lifecycles=("run_once", "supervise", "event_driven"),
    params_schema=s.params(
        {
            "network": s.enum("Transport.", _NETWORK),
            "address": s.address("Local address to bind, e.g. \":8080\" or \"127.0.0.1:6380\"."),
        },
        required=("network", "address"),
    ),
    # The checklist gives no summary (it runs until cancelled); what it reports when it stops.
    summary_schema=s.summary(
        {
            "address": s.string("The bound local address, host:port."),
            "connections_accepted": s.integer("Connections accepted.", minimum=0),
        },
        dry_run=True,
    ),
    record_schema=s.record(
        {
            "connection_id": s.string(
                "Id of the accepted connection (UDP: of the datagram, which connection:read "
                "returns and connection:write answers)."
            ),
            "remote_addr": s.string("Peer address, host:port."),
        }
    ),
    logged_params=("address",),
)

READ = ModuleSpec(
    name="connection:read",
    layer="L2",
    description="Read from a connection: a byte count, up to a delimiter, or until the peer "
    "closes (UDP: the next datagram).",
    params_schema=s.params(
        {
            "connection_id": s.connection_id(_BYTES_ID),
            "read_bytes": s.integer("Read exactly this many bytes.", minimum=1),
            "read_until": s.nonempty(
                "Read up to and including this delimiter (with read_bytes, the first condition "
                "met wins)."
            ),
            "timeout": s.duration("Fail when no data arrives within this time."),
            "encoding": s.enum(
                "How the bytes read are returned in `data`.", _ENCODINGS, default="string"
            ),
        },
        required=("connection_id",),
    ),
    summary_schema=s.summary(
        {
            "data": s.string("The data read, in the requested encoding."),
            "bytes_read": s.integer("Number of bytes read.", minimum=0),
        },
        dry_run=True,
    ),
)

WRITE = ModuleSpec(
    name="connection:write",
    layer="L2",
    description="Write raw data to a connection.",
    params_schema=s.params(
        {
            "connection_id": s.connection_id(_BYTES_ID),
            "data": s.string("Data to write, encoded as `encoding` says."),
            "encoding": s.enum("How `data` is encoded.", _ENCODINGS, default="string"),
        },
        required=("connection_id", "data"),
    ),
    summary_schema=s.summary(
        {"bytes_written": s.integer("Number of bytes written.", minimum=0)}, dry_run=True
    ),
    # `data` goes to the peer, not into the summary or logs.
)

CLOSE = ModuleSpec(
    name="connection:close",
    layer="L2",
    description="Close a connection and forget it (an unknown id is a not-found error).",
    params_schema=s.params({"connection_id": s.connection_id()}, required=("connection_id",)),
    summary_schema=s.summary(
        {
            "connection_id": s.string("Id of the closed connection."),
            "closed": s.const_true("Always true."),
        },
        dry_run=True,
    ),
    logged_params=("connection_id",),  # echoed by the summary
)

MODULES: tuple[ModuleSpec, ...] = (OPEN, LISTEN, READ, WRITE, CLOSE)


# --------------------------------------------------------------------------- code
#
# The sockets live in the kernel's connection manager (gxo.runtime.connections, reached through
# ``ctx.connections()``): a connection outlives the workload that opened it and is closed when
# the run ends, however it ends.


def _timeout(params: dict, key: str = "timeout") -> float | None:
    from gxo.stdlib import _params as p

    if params.get(key) is None:
        return None
    return p.opt_duration(params, key, "0") or None


def _encode(data: bytes, encoding: str) -> str:
    if encoding == "base64":
        import base64

        return base64.b64encode(data).decode("ascii")
    if encoding == "hex":
        return data.hex()
    return data.decode("utf-8", "replace")


def _decode(text: str, encoding: str) -> bytes:
    from gxo.runtime.module import ValidationError

    if encoding == "base64":
        import base64
        import binascii

        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("parameter 'data' is not valid base64 (encoding: base64)") from None
    if encoding == "hex":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ValidationError("parameter 'data' is not valid hex (encoding: hex)") from None
    return text.encode("utf-8")


def _common(params: dict, spec: ModuleSpec) -> dict:
    from gxo.stdlib import _params as p

    params = p.check_map(params)
    p.check_allowed(params, tuple(spec.params_schema["properties"]), spec.name)
    return params


class Open:
    """``connection:open``: dial TCP (or set up a connected UDP socket) and register it."""

    name = "connection:open"

    async def perform(self, ctx, params):
        import asyncio

        from gxo.runtime.connections import DatagramQueue, TcpConnection, UdpConnection, split_addr
        from gxo.runtime.module import ModuleError
        from gxo.stdlib import _params as p

        params = _common(params, OPEN)
        network = p.opt_enum(params, "network", _NETWORK)
        if network is None:
            p.req_str(params, "network")
        address = p.req_str(params, "address")
        timeout = _timeout(params)
        host, port = split_addr(address)
        if ctx.dry_run:
            ctx.logger.info("dry run: would open a connection", network=network, address=address)
            return {"connection_id": "", "local_addr": "", "remote_addr": address, "dry_run": True}
        mgr = ctx.connections()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                if network == "tcp":
                    reader, writer = await asyncio.open_connection(host, port)
                    conn = TcpConnection(reader, writer)
                else:
                    transport, proto = await loop.create_datagram_endpoint(DatagramQueue, remote_addr=(host, port))
                    conn = UdpConnection(transport, proto)
        except TimeoutError:
            raise ModuleError(f"cannot connect to {address} ({network}): no answer within {timeout:g}s") from None
        except OSError as exc:
            raise ModuleError(f"cannot connect to {address} ({network}): {exc.strerror or exc}") from None
        cid = mgr.add(conn)
        ctx.logger.debug("connection opened", connection_id=cid, local_addr=conn.local_addr,
                         remote_addr=conn.remote_addr)
        return {"connection_id": cid, "local_addr": conn.local_addr, "remote_addr": conn.remote_addr}


#: accept errors after which a listener goes on (the peer left first, or descriptors ran out)
_ACCEPT_AGAIN = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                           errno.ENOMEM, errno.EPERM, errno.EAGAIN, errno.EINTR})


class Listen:
    """``connection:listen``: accept connections (TCP) or datagrams (UDP) until cancelled, one
    record ``{connection_id, remote_addr}`` each.  A UDP record's connection holds the datagram
    (``connection:read`` returns it) and answers its sender (``connection:write``)."""

    name = "connection:listen"

    async def perform(self, ctx, params):
        import asyncio

        from gxo.runtime.connections import (DatagramQueue, TcpConnection, UdpPeer, format_addr, split_addr,
                                             tcp_listen_socket)
        from gxo.runtime.module import ModuleError
        from gxo.runtime.streams import output_of
        from gxo.stdlib import _params as p

        params = _common(params, LISTEN)
        network = p.opt_enum(params, "network", _NETWORK)
        if network is None:
            p.req_str(params, "network")
        address = p.req_str(params, "address")
        host, port = split_addr(address, listen=True)
        if ctx.dry_run:
            ctx.logger.info("dry run: would listen", network=network, address=address)
            return {"address": address, "connections_accepted": 0, "dry_run": True}
        mgr = ctx.connections()
        out = output_of(ctx)
        loop = asyncio.get_running_loop()
        accepted = 0

        async def register(conn) -> None:
            nonlocal accepted
            try:
                cid = mgr.add(conn)
            except ModuleError as exc:  # the limit: this peer is turned away, the others served
                ctx.logger.warning("connection refused", remote_addr=conn.remote_addr, reason=str(exc))
                return
            accepted += 1
            await out.emit_one({"connection_id": cid, "remote_addr": conn.remote_addr})
            await out.flush()

        if network == "tcp":
            try:
                sock = tcp_listen_socket(host, port)
            except OSError as exc:
                raise ModuleError(f"cannot listen on {address} (tcp): {exc.strerror or exc}") from None
            mgr.listening(sock)
            ctx.logger.info("listening", network="tcp", address=format_addr(sock.getsockname()))
            try:
                while True:
                    try:
                        client, _ = await loop.sock_accept(sock)
                    except OSError as exc:
                        if exc.errno in _ACCEPT_AGAIN:  # a peer gone before accept, or no fds
                            ctx.logger.warning("accept failed, retrying", error=exc.strerror or str(exc))
                            await asyncio.sleep(0.05)
                            continue
                        # the listening socket itself is gone (destroyed, closed): the workload
                        # fails and its lifecycle decides (a supervised listener is restarted)
                        raise ModuleError(f"listening socket on {address} (tcp) failed: "
                                          f"{exc.strerror or exc}") from None
                    try:
                        reader, writer = await asyncio.open_connection(sock=client)
                    except OSError:  # gone before it was set up
                        client.close()
                        continue
                    await register(TcpConnection(reader, writer))
            finally:
                mgr.unlisten(sock)
        try:
            transport, proto = await loop.create_datagram_endpoint(
                DatagramQueue, local_addr=(host or "0.0.0.0", port))
        except OSError as exc:
            raise ModuleError(f"cannot listen on {address} (udp): {exc.strerror or exc}") from None
        mgr.listening(transport)
        ctx.logger.info("listening", network="udp", address=format_addr(transport.get_extra_info("sockname")))
        try:
            while True:
                data, addr = await proto.queue.get()
                if addr is not None:  # None: an error report of the socket, nothing received
                    await register(UdpPeer(transport, addr, data))
        finally:
            mgr.unlisten(transport)


class Read:
    """``connection:read``: ``read_bytes``, ``read_until`` (the first met wins), or neither:
    until the peer closes (a UDP connection: the next datagram)."""

    name = "connection:read"

    async def perform(self, ctx, params):
        from gxo.stdlib import _params as p

        params = _common(params, READ)
        cid = p.req_str(params, "connection_id")
        read_bytes = p.opt_int(params, "read_bytes", minimum=1)
        until = p.opt_str(params, "read_until")
        if until == "":
            p.req_str(params, "read_until")  # the empty-string error
        timeout = _timeout(params)
        encoding = p.opt_enum(params, "encoding", _ENCODINGS, "string") or "string"
        if ctx.dry_run:
            ctx.logger.info("dry run: would read from a connection", connection_id=cid)
            return {"data": "", "bytes_read": 0, "dry_run": True}
        conn = ctx.connections().get(cid)
        data = await conn.read(read_bytes, until.encode("utf-8") if until else None, timeout)
        return {"data": _encode(data, encoding), "bytes_read": len(data)}


class Write:
    """``connection:write``: send ``data`` (decoded as ``encoding`` says) and wait until the
    socket has taken it."""

    name = "connection:write"

    async def perform(self, ctx, params):
        from gxo.stdlib import _params as p

        params = _common(params, WRITE)
        cid = p.req_str(params, "connection_id")
        data = p.req_str(params, "data", nonempty=False)
        encoding = p.opt_enum(params, "encoding", _ENCODINGS, "string") or "string"
        raw = _decode(data, encoding)
        if ctx.dry_run:
            ctx.logger.info("dry run: would write to a connection", connection_id=cid, bytes=len(raw))
            return {"bytes_written": 0, "dry_run": True}
        conn = ctx.connections().get(cid)
        return {"bytes_written": await conn.write(raw)}


class Close:
    """``connection:close``: close a connection and forget its id (unknown id: not found)."""

    name = "connection:close"

    async def perform(self, ctx, params):
        from gxo.stdlib import _params as p

        params = _common(params, CLOSE)
        cid = p.req_str(params, "connection_id")
        if ctx.dry_run:
            ctx.logger.info("dry run: would close a connection", connection_id=cid)
            return {"connection_id": cid, "closed": True, "dry_run": True}
        conn = ctx.connections().close(cid)
        await conn._wait_closed()
        return {"connection_id": cid, "closed": True}


CODE = {"connection:open": Open, "connection:listen": Listen, "connection:read": Read,
        "connection:write": Write, "connection:close": Close}
