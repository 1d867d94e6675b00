"""``data:join``: a hash join of a probe stream against build streams."""

from __future__ import annotations

from gxo.stdlib.data._common import _error_text


def _join_key(value):
    """A join key normalised (checklist §3.L4): ints, whole floats and integer strings become
    int; other strings stay as they are; anything else is a record error (ValueError)."""
    import re

    from gxo.stdlib._params import kind

    t = type(value)
    if t is int:
        return value
    if t is str:
        if re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            return int(value)
        return value
    if t is float:
        if value.is_integer():
            return int(value)
        raise ValueError(f"join key {value!r} is not an integer")
    if isinstance(value, bool) or value is None or not isinstance(value, (int, str)):
        raise ValueError(f"join key of type {kind(value)} is not supported")
    return int(value) if isinstance(value, int) else str(value)


class Join:
    """``data:join``: a hash join of one probe stream against one or more build streams."""

    name = "data:join"

    async def perform(self, ctx, params):
        import itertools

        from gxo.runtime._state_cy import deep_copy
        from gxo.runtime.module import ModuleError, ValidationError
        from gxo.runtime.opstate import operator_state_of
        from gxo.runtime.streams import errors_of, inputs_of, output_of
        from gxo.stdlib import _params as p

        params = p.check_map(params)
        join_type = p.opt_enum(params, "join_type", ("inner", "left", "right", "outer"))
        if join_type is None:
            raise ValidationError("missing required parameter 'join_type'")
        on = params.get("on")
        if not isinstance(on, list) or len(on) < 2:
            raise ValidationError("parameter 'on' must list at least two streams")
        inputs = inputs_of(ctx)
        names = inputs.names
        keys: dict = {}  # stream -> key function of a record
        roles: dict = {}
        for i, entry in enumerate(on):
            if not isinstance(entry, dict):
                raise ValidationError(f"on[{i}] must be a map")
            stream, role = entry.get("stream"), entry.get("role")
            if stream not in names:
                raise ValidationError(f"on[{i}].stream {stream!r} is not a stream input "
                                      f"(inputs: {', '.join(names) or 'none'})")
            if stream in roles:
                raise ValidationError(f"on[{i}]: stream {stream!r} is listed twice")
            if role not in ("build", "probe"):
                raise ValidationError(f"on[{i}].role must be build or probe")
            has_field, has_tpl = "field" in entry, "template" in entry
            if has_field == has_tpl:
                raise ValidationError(f"on[{i}] needs exactly one of field and template")
            roles[stream] = role
            if has_field:
                field = entry["field"]

                def key_of(record, _f=field):
                    if not isinstance(record, dict) or _f not in record:
                        raise ValueError(f"missing join field {_f!r}")
                    return _join_key(record[_f])
            else:
                tpl = entry["template"]

                def key_of(record, _t=tpl):
                    return _join_key(_t(record) if callable(_t) else _t)
            keys[stream] = key_of
        missing = [n for n in names if n not in roles]
        if missing:
            raise ValidationError(f"parameter 'on' has no entry for stream {missing[0]!r}")
        probes = [n for n in names if roles[n] == "probe"]
        if len(probes) != 1:
            raise ValidationError(f"parameter 'on' must name exactly one probe stream, got "
                                  f"{len(probes)}")
        probe = probes[0]
        builds = [n for n in names if roles[n] == "build"]
        output = p.opt_map(params, "output") or {}
        strategy = output.get("merge_strategy", "flat") or "flat"
        if strategy not in ("flat", "nested"):
            raise ValidationError("output.merge_strategy must be flat or nested")
        nesting = output.get("nesting_keys") or {}
        if strategy == "nested":
            absent = [n for n in names if n not in nesting]
            if absent:
                raise ValidationError(f"output.nesting_keys has no key for stream {absent[0]!r}")
        limits = p.opt_map(params, "limits") or {}
        max_build = p.opt_int(limits, "max_build_records", minimum=1)
        max_buffer = p.opt_int(limits, "max_probe_buffer", 100000, minimum=1)

        order = sorted(names)  # flat merge overlays in stream-name order

        def merge(parts: dict) -> dict:
            """One output record from {stream: record or None}; build records are copied (a
            build record may appear in many outputs)."""
            if strategy == "nested":
                return {nesting[n]: (parts.get(n) if n == probe else deep_copy(parts.get(n)))
                        for n in names}
            merged: dict = {}
            for n in order:
                rec = parts.get(n)
                if rec is not None:
                    merged.update(rec if n == probe else deep_copy(rec))
            return merged

        out = output_of(ctx)
        errors = errors_of(ctx)
        # the join's state lives in the kernel's operator state of this workload: the build
        # tables (key -> records), the keys matched so far, the probe records held until every
        # build side has ended, the records read per input and the summary counts
        state = operator_state_of(ctx)
        tables: dict = {b: state.region(f"build:{b}") for b in builds}
        matched: dict = state.region("matched")
        positions: dict = state.region("positions")
        for n in names:
            positions.setdefault(n, 0)
        counts = state.region("counts")
        for k in ("records_joined", "probe_stream_records", "build_stream_records",
                  "skipped_key_errors"):
            counts.setdefault(k, 0)
        held = sum(len(rows) for t in tables.values() for rows in t.values())
        pending: list = state.region("pending").setdefault("probe", [])
        open_builds = set(builds)
        keep_unmatched_probe = join_type in ("left", "outer")

        def keyed(stream: str, batch: list):
            key_of = keys[stream]
            base = positions[stream]
            positions[stream] = base + len(batch)
            for i, record in enumerate(batch):
                try:
                    yield key_of(record), record
                except Exception as exc:  # noqa: BLE001 - a record error: skipped
                    counts["skipped_key_errors"] += 1
                    errors.report(base + i, stream, _error_text(exc))

        def probe_batch(batch: list) -> list:
            result = []
            for key, record in batch:
                sides = [tables[b].get(key) for b in builds]
                if all(sides):
                    matched[key] = True
                    for combo in itertools.product(*sides):
                        parts = dict(zip(builds, combo))
                        parts[probe] = record
                        result.append(merge(parts))
                elif keep_unmatched_probe:
                    if any(sides):
                        matched[key] = True
                    present = [(b, s if s else [None]) for b, s in zip(builds, sides)]
                    for combo in itertools.product(*(s for _, s in present)):
                        parts = dict(zip(builds, combo))
                        parts[probe] = record
                        result.append(merge(parts))
                elif any(sides):
                    pass  # inner/right: a partial match is no match
            return result

        async for stream, batch in inputs.batches(ends=True):
            if batch is None:
                open_builds.discard(stream)
                if not open_builds and pending:
                    result = probe_batch(pending)
                    pending.clear()
                    if result:
                        counts["records_joined"] += len(result)
                        await out.send_batch(result)
                continue
            if stream == probe:
                counts["probe_stream_records"] += len(batch)
                rows = list(keyed(stream, batch))
                if open_builds:
                    pending.extend(rows)
                    if len(pending) > max_buffer:
                        raise ModuleError(f"max_probe_buffer of {max_buffer} reached: probe "
                                          f"records arrived before every build stream ended")
                    continue
                result = probe_batch(rows)
                if result:
                    counts["records_joined"] += len(result)
                    await out.send_batch(result)
            else:
                counts["build_stream_records"] += len(batch)
                table = tables[stream]
                for key, record in keyed(stream, batch):
                    held += 1
                    if max_build is not None and held > max_build:
                        raise ModuleError(f"max_build_records of {max_build} reached")
                    table.setdefault(key, []).append(record)
        if pending:  # only when there is no build stream left open (cannot happen) - be safe
            result = probe_batch(pending)
            pending.clear()
            if result:
                counts["records_joined"] += len(result)
                await out.send_batch(result)
        if join_type in ("right", "outer"):
            unmatched: set = set()
            for b in builds:
                unmatched.update(k for k in tables[b] if k not in matched)
            result = []
            for key in sorted(unmatched, key=lambda k: (isinstance(k, str), k)):
                sides = [tables[b].get(key) or [None] for b in builds]
                for combo in itertools.product(*sides):
                    parts = dict(zip(builds, combo))
                    parts[probe] = None
                    result.append(merge(parts))
            if result:
                counts["records_joined"] += len(result)
                await out.send_batch(result)
        return dict(counts)
