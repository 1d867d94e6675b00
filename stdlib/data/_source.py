"""``data:generate_from_list`` and ``data:parse``: the producers of records."""

from __future__ import annotations

from gxo.stdlib.data._common import _is_record
from gxo.stdlib.data._specs import PARSE_FORMATS


class GenerateFromList:
    """``data:generate_from_list``: one record per item (maps as they are, others wrapped)."""

    name = "data:generate_from_list"

    async def perform(self, ctx, params):
        from gxo.runtime.module import ValidationError
        from gxo.runtime.streams import errors_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        items = params.get("items")
        if items is None:
            raise ValidationError("missing required parameter 'items'")
        if not isinstance(items, (list, tuple)):
            raise ValidationError(f"parameter 'items' must be a list, got {p.kind(items)}")
        out = output_of(ctx)
        errors = errors_of(ctx)
        size = out.batch_size
        batch: list = []
        sent = 0
        for i, item in enumerate(items):
            if isinstance(item, dict):
                if not _is_record(item):
                    errors.report(i, ctx.workload, "item is a map whose keys are not all strings")
                    continue
                record = item
            else:
                record = {"item": item}
            batch.append(record)
            if len(batch) >= size:
                sent += len(batch)
                await out.send_batch(batch)
                batch = []
        if batch:
            sent += len(batch)
            await out.send_batch(batch)
        return {"records_generated": sent}


# -- data:parse -------------------------------------------------------------------------------


def _walk_path(doc, path: str):
    """``doc`` at the dotted ``path`` (numeric segments index lists)."""
    from gxo.runtime.module import ModuleError

    node = doc
    for seg in path.split("."):
        if seg == "":
            continue
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.lstrip("-").isdigit() and -len(node) <= int(seg) < len(node):
            node = node[int(seg)]
        else:
            raise ModuleError(f"json_path {path!r}: no element {seg!r} in the document")
    return node


def _document_records(doc, report) -> list:
    """json/yaml: each element of a top-level list is a record, a single map is one record."""
    if isinstance(doc, dict):
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        from gxo.runtime.module import ModuleError
        from gxo.stdlib._params import kind

        raise ModuleError(f"the document is a {kind(doc)}: expected a list of maps or a map")
    records = []
    for i, item in enumerate(items):
        if _is_record(item):
            records.append(item)
        else:
            from gxo.stdlib._params import kind

            report(i, f"element {i} is a {kind(item)}, not a map with string keys")
    return records


def _parse_csv(content: str, options: dict, report) -> list:
    import csv
    import io

    delimiter = options.get("delimiter") or ","
    headers = options.get("headers")
    rows = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, strict=True)
    records = []
    position = 0
    try:
        for row in rows:
            if not row:
                continue  # a blank line
            if headers is None:
                headers = row
                continue
            if len(row) != len(headers):
                report(position, f"row has {len(row)} fields, the header has {len(headers)}")
            else:
                records.append(dict(zip(headers, row)))
            position += 1
    except csv.Error as exc:
        from gxo.runtime.module import ModuleError

        raise ModuleError(f"invalid csv at line {rows.line_num}: {exc}") from None
    return records


def _parse_regex(content: str, options: dict) -> list:
    from gxo.runtime import regex
    from gxo.runtime.module import ValidationError

    pattern = options.get("pattern")
    if not isinstance(pattern, str) or pattern == "":
        raise ValidationError("format regex needs format_options.pattern")
    try:
        rx = regex.compile(pattern, multiline=True)
    except regex.RegexError as exc:
        raise ValidationError(f"format_options.pattern is not a valid regular expression: "
                              f"{exc}; {regex.DIALECT}") from None
    named = {index: name for name, index in rx.groupindex.items()}
    unnamed = [i for i in range(1, rx.groups + 1) if i not in named]
    names = options.get("capture_groups")
    if names is not None:
        if len(names) != len(unnamed):
            raise ValidationError(f"format_options.capture_groups names {len(names)} groups, "
                                  f"the pattern has {len(unnamed)} unnamed groups")
        named.update(zip(unnamed, names))
    else:
        named.update((i, f"group{i}") for i in unnamed)
    order = sorted(named)
    fields = [(named[i], i) for i in order]
    records = []
    if not fields:
        for text, spans in rx.finditer(content):
            start, end = spans[0]
            records.append({"match": text[start:end]})
        return records
    for text, spans in rx.finditer(content):
        record = {}
        for name, i in fields:
            start, end = spans[i]
            record[name] = text[start:end] if start >= 0 else None
        records.append(record)
    return records


def _logfmt_line(line: str) -> dict:
    """One logfmt line: ``key=value``, ``key="quoted \\" value"``, a bare ``key`` is true."""
    out: dict = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and line[i] not in " \t=\"":
            i += 1
        key = line[start:i]
        if key == "":
            raise ValueError(f"expected a key at column {i + 1}")
        if i < n and line[i] == "=":
            i += 1
            if i < n and line[i] == '"':
                i += 1
                chars = []
                while True:
                    if i >= n:
                        raise ValueError(f"unterminated quoted value of {key!r}")
                    c = line[i]
                    if c == "\\" and i + 1 < n:
                        nxt = line[i + 1]
                        chars.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                        i += 2
                        continue
                    if c == '"':
                        i += 1
                        break
                    chars.append(c)
                    i += 1
                value = "".join(chars)
                if i < n and line[i] not in " \t":
                    raise ValueError(f"garbage after the quoted value of {key!r}")
            else:
                start = i
                while i < n and line[i] not in " \t":
                    i += 1
                value = line[start:i]
                if '"' in value:
                    raise ValueError(f"stray quote in the value of {key!r}")
            out[key] = value
        elif i < n and line[i] == '"':
            raise ValueError(f"stray quote after key {key!r}")
        else:
            out[key] = True
    return out


#: characters of a line format parsed (and sent) at a time
_LINE_CHUNK = 1 << 16


def _line_chunks(content: str):
    """``content`` in pieces of about ``_LINE_CHUNK`` characters, each cut just after a
    ``\n``: the lines of the pieces (``str.splitlines``) are exactly those of ``content``."""
    n = len(content)
    start = 0
    while start < n:
        cut = content.find("\n", start + _LINE_CHUNK) if start + _LINE_CHUNK < n else -1
        end = n if cut < 0 else cut + 1
        yield content[start:end]
        start = end


async def _send_lines(content: str, fmt: str, options: dict, out, report) -> int:
    """text_lines / logfmt: parse ``content`` a piece at a time and send each piece's records
    in batches; the number of records sent."""
    from gxo.runtime._records_cy import line_values

    size = out.batch_size
    skip = bool(options.get("skip_empty", False))
    sent = 0
    position = 0
    for piece in _line_chunks(content):
        if fmt == "text_lines":
            # the records {"line": ...} go as their lines: a data:map on the direct hand-over
            # reads them without their maps being built (StreamOutput.send_field)
            lines = line_values(piece, skip)
            sent += len(lines)
            for i in range(0, len(lines), size):
                await out.send_field("line", lines[i:i + size] if len(lines) > size else lines)
            continue
        records = []
        for line in piece.splitlines():
            if not line.strip():
                continue
            try:
                records.append(_logfmt_line(line))
            except ValueError as exc:
                report(position, f"invalid logfmt: {exc}")
            position += 1
        sent += len(records)
        if len(records) <= size:
            await out.send_batch(records)
            continue
        for i in range(0, len(records), size):
            await out.send_batch(records[i:i + size])
    return sent


class Parse:
    """``data:parse``: a text blob into records."""

    name = "data:parse"

    async def perform(self, ctx, params):
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.runtime.streams import errors_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        content = p.req_str(params, "content", nonempty=False)
        fmt = p.opt_enum(params, "format", PARSE_FORMATS)
        if fmt is None:
            raise ValidationError("missing required parameter 'format'")
        options = p.opt_map(params, "format_options") or {}
        errors = errors_of(ctx)

        def report(position: int, message: str) -> None:
            errors.report(position, ctx.workload, message)

        if fmt in ("json", "yaml"):
            from gxo.runtime.limits import LimitExceeded, load_json, load_yaml

            if fmt == "json":
                try:
                    doc = load_json(content, constants=True)
                except LimitExceeded as exc:
                    raise ModuleError(f"json past a limit: {exc} (docs/runtime.md#limits)") from None
                except ValueError as exc:
                    raise ModuleError(f"invalid json: {exc}") from None
            else:
                import yaml  # lazily: only the yaml format needs PyYAML

                try:
                    doc = load_yaml(content)
                except LimitExceeded as exc:
                    raise ModuleError(f"yaml past a limit: {exc} (docs/runtime.md#limits)") from None
                except yaml.YAMLError as exc:
                    raise ModuleError(f"invalid yaml: {exc}") from None
            path = options.get("json_path")
            if path:
                doc = _walk_path(doc, path)
            records = _document_records(doc, report)
        elif fmt == "csv":
            records = _parse_csv(content, options, report)
        elif fmt in ("text_lines", "logfmt"):
            # line formats stream: a piece of the text at a time is parsed and sent, so only
            # the records the channels hold are ever in memory, never all of them
            out = output_of(ctx)
            return {"records_parsed": await _send_lines(content, fmt, options, out, report)}
        elif fmt == "regex":
            records = _parse_regex(content, options)
        out = output_of(ctx)
        size = out.batch_size
        for i in range(0, len(records), size):
            await out.send_batch(records[i:i + size])
        return {"records_parsed": len(records)}
