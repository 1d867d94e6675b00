"""``connection:*`` (L2): raw TCP/UDP sockets held by the kernel's connection manager and
referenced by ``connection_id``."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

_NETWORK = ("tcp", "udp")
_ENCODINGS = ("string", "base64", "hex")

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
            "connection_id": s.string("Id of the accepted connection."),
            "remote_addr": s.string("Peer address, host:port."),
        }
    ),
    logged_params=("address",),
)

READ = ModuleSpec(
    name="connection:read",
    layer="L2",
    description="Read from a connection: a byte count, up to a delimiter, or until the peer "
    "closes.",
    params_schema=s.params(
        {
            "connection_id": s.connection_id(),
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
            "connection_id": s.connection_id(),
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
