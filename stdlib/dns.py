"""``dns:*`` (L3): name resolution."""

from __future__ import annotations

from gxo.stdlib import _schemas as s
from gxo.stdlib._spec import ModuleSpec

RECORD_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "CAA")

#: an IPv4 address, ``[IPv6]`` or a bare IPv6 address, the bracketed and IPv4 forms with an
#: optional ``:port`` (the run checks the address itself)
SERVER_PATTERN = (r"^([0-9]{1,3}(\.[0-9]{1,3}){3}(:[0-9]{1,5})?"
                  r"|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
                  r"|[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$")

QUERY = ModuleSpec(
    name="dns:query",
    layer="L3",
    description="Resolve DNS records of a name.",
    params_schema=s.params(
        {
            "name": s.nonempty(
                "Name to resolve, taken as absolute (no search domains are tried); for PTR an "
                "IPv4 or IPv6 address, whose reverse name is asked, or the reverse name itself."),
            "type": s.enum("Record type.", RECORD_TYPES, default="A"),
            "server": s.string(
                "The DNS server to ask: an IP address with an optional port (`127.0.0.1`, "
                "`127.0.0.1:5353`, `::1`, `[::1]:5353`; port 53 when omitted). Without it the "
                "system resolver (/etc/resolv.conf) is asked. A host name is not accepted.",
                pattern=SERVER_PATTERN,
            ),
            "timeout": s.duration(
                "Time allowed for the whole query, retries and every server included; "
                "past it the workload fails (\"no answer ... within 5s\").",
                default="5s",
            ),
        },
        required=("name",),
    ),
    summary_schema=s.summary(
        {
            "answers": s.string_list(
                "Answers in the resolver's order, each in its presentation form (an MX answer "
                "as \"10 mail.example.com.\", a TXT answer with its quotes). A name that does "
                "not exist (NXDOMAIN), a name without records of the type, a server error "
                "and a timeout fail the workload instead.",
                "One answer.",
            ),
            "name": s.string(
                "The absolute name asked for, with its final dot (for PTR: the reverse name "
                "such as \"1.0.0.127.in-addr.arpa.\")."
            ),
            "ttl": s.integer("Time to live of the answers, in seconds (0 in a dry run).",
                             minimum=0),
        },
        dry_run=True,
    ),
    logged_params=("name", "type", "server"),  # logged and sent to the resolver in clear
)

MODULES: tuple[ModuleSpec, ...] = (QUERY,)


# --------------------------------------------------------------------------- code
#
# Module code (design.md §8).  dnspython is imported inside perform: the compiler imports this
# file and `gxo exec` must start without it.


def _server(text: str) -> tuple[str, int]:
    """``server`` as (address, port); a ValidationError naming the accepted forms otherwise."""
    import ipaddress

    from gxo.runtime.module import ValidationError

    host, port = text.strip(), 53
    if host.startswith("["):
        inside, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            host = ""
        else:
            host, port_text = inside, rest[1:] if rest else "53"
            port = int(port_text) if port_text.isdigit() else -1
    elif host.count(":") == 1:
        host, port_text = host.split(":")
        port = int(port_text) if port_text.isdigit() else -1
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is None or not 1 <= port <= 65535:
        raise ValidationError(
            f"parameter 'server' must be an IP address with an optional port (127.0.0.1, "
            f"127.0.0.1:5353, ::1 or [::1]:5353), got {text!r}")
    return str(addr), port


class Query:
    """``dns:query``: one query with dnspython's asyncio resolver.

    With ``server`` the query goes to that address and port only; without it to the system
    resolver's servers.  ``timeout`` bounds the whole resolution.  NXDOMAIN, an empty answer,
    a server failure and a timeout fail the workload with one line naming the name, the type
    and the server.  A dry run asks nothing: the query is outside I/O, as http:request's is.
    """

    name = "dns:query"

    async def perform(self, ctx, params):
        import ipaddress

        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        p.check_allowed(params, ("name", "type", "server", "timeout"), self.name)
        name = p.req_str(params, "name").strip()
        rtype = p.opt_str(params, "type", "A") or "A"
        if rtype not in RECORD_TYPES:
            raise ValidationError(f"parameter 'type' must be one of {', '.join(RECORD_TYPES)}; "
                                  f"got {rtype!r}")
        server_text = p.opt_str(params, "server")
        server = _server(server_text) if server_text else None
        timeout = p.opt_duration(params, "timeout", "5s")
        if timeout <= 0:
            raise ValidationError("parameter 'timeout' must be greater than 0")

        import dns.exception
        import dns.name
        import dns.reversename

        try:
            if rtype == "PTR" and _is_address(name, ipaddress):
                qname = dns.reversename.from_address(name)
            else:
                qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise ValidationError(f"parameter 'name' is not a valid DNS name: {name!r} ({exc})") \
                from None
        shown = qname.to_text()
        where = f"{server[0]}:{server[1]}" if server else "the system resolver"

        if ctx.dry_run:
            ctx.logger.info("dry run: would query DNS", name=shown, type=rtype, server=where)
            return {"answers": [], "name": shown, "ttl": 0, "dry_run": True}

        import dns.asyncresolver
        import dns.resolver

        try:
            if server:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [server[0]]
                resolver.port = server[1]
            else:
                resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ModuleError("no system resolver is configured (/etc/resolv.conf lists no "
                              "nameserver): set 'server'") from None
        resolver.timeout = timeout
        resolver.lifetime = timeout
        what = f"{rtype} {shown}"
        try:
            answer = await resolver.resolve(qname, rtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise ModuleError(f"{what}: the name does not exist (NXDOMAIN from {where})") from None
        except dns.resolver.NoAnswer:
            raise ModuleError(f"{what}: the name has no {rtype} record (empty answer from "
                              f"{where})") from None
        except dns.resolver.LifetimeTimeout:
            raise ModuleError(f"{what}: no answer from {where} within {_secs(timeout)} "
                              f"(timeout)") from None
        except dns.resolver.NoNameservers as exc:
            raise ModuleError(f"{what}: {where} could not answer ({_why(exc)})") from None
        except dns.exception.DNSException as exc:
            raise ModuleError(f"{what}: the query to {where} failed: {exc}") from None
        except OSError as exc:
            raise ModuleError(f"{what}: the query to {where} failed: "
                              f"{exc.strerror or exc}") from None
        rrset = answer.rrset
        answers = [rdata.to_text() for rdata in rrset] if rrset is not None else []
        return {"answers": answers, "name": shown, "ttl": rrset.ttl if rrset is not None else 0}


def _is_address(text: str, ipaddress) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


def _why(exc) -> str:
    """The servers' answers of a NoNameservers error, e.g. ``SERVFAIL``."""
    import dns.rcode

    errors = exc.kwargs.get("errors") or []
    for err in errors:
        answer = err[4] if len(err) > 4 else None
        if answer is not None and hasattr(answer, "rcode"):
            return dns.rcode.to_text(answer.rcode())
    return "no server answered usefully"


CODE = {"dns:query": Query}
