"""``data:format``: the whole input stream serialised into one string."""

from __future__ import annotations

from gxo.stdlib.data._common import _error_text, _one_input


def _cell(record, header: str) -> str:
    from gxo.runtime.exprlib import text

    if not isinstance(record, dict):
        return ""
    v = record.get(header)
    return "" if v is None else text(v)


class Format:
    """``data:format``: serialise the whole input stream into one string."""

    name = "data:format"

    async def perform(self, ctx, params):
        import json

        from gxo.runtime.exprlib import _json_default, text
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.runtime.streams import errors_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        fmt = p.opt_enum(params, "format", ("json", "yaml", "csv", "text", "html_table"))
        if fmt is None:
            raise ValidationError("missing required parameter 'format'")
        options = p.opt_map(params, "format_options") or {}
        headers = p.opt_str_list(options, "headers") if options.get("headers") is not None \
            else None
        inputs = _one_input(ctx, "data:format")
        errors = errors_of(ctx)
        records: list = []
        lines: list = []
        template = options.get("template")
        positions: dict = {}
        async for producer, batch in inputs:
            if fmt != "text":
                records.extend(batch)
                continue
            base = positions.get(producer, 0)
            positions[producer] = base + len(batch)
            for i, record in enumerate(batch):
                try:
                    value = record if template is None else (
                        template(record) if callable(template) else template)
                    lines.append(text(value))
                except Exception as exc:  # noqa: BLE001 - a record error: the record is left out
                    errors.report(base + i, producer, _error_text(exc))
        if fmt == "text":
            return {"formatted_content": "\n".join(lines)}
        if fmt == "json":
            try:
                content = json.dumps(records, separators=(",", ":"), ensure_ascii=False,
                                     default=_json_default)
            except (TypeError, ValueError) as exc:
                raise ModuleError(f"cannot format the records as json: {exc}") from None
            return {"formatted_content": content}
        if fmt == "yaml":
            import yaml  # lazily: only the yaml format needs PyYAML

            try:
                content = yaml.safe_dump(records, sort_keys=False, allow_unicode=True,
                                         default_flow_style=False)
            except yaml.YAMLError as exc:
                raise ModuleError(f"cannot format the records as yaml: {exc}") from None
            return {"formatted_content": content}
        if headers is None:
            first = next((r for r in records if isinstance(r, dict)), None)
            headers = list(first) if first is not None else []
        if fmt == "csv":
            import csv
            import io

            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
            if headers:
                writer.writerow(headers)
            for record in records:
                writer.writerow([_cell(record, h) for h in headers])
            return {"formatted_content": buf.getvalue()}
        # html_table
        from html import escape

        parts = ["<table>", "<thead><tr>"]
        parts.extend(f"<th>{escape(h)}</th>" for h in headers)
        parts.append("</tr></thead>")
        parts.append("<tbody>")
        for record in records:
            parts.append("<tr>")
            parts.extend(f"<td>{escape(_cell(record, h))}</td>" for h in headers)
            parts.append("</tr>")
        parts.append("</tbody>")
        parts.append("</table>")
        return {"formatted_content": "".join(parts)}
