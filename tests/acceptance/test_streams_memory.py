"""A slow consumer throttles a fast producer under `block`: memory stays bounded.

1,000,000 records from `test:producer` go through a capacity-100 channel to `data:filter`, then
on to a slower `data:map` (it renders a new record with a pipe per record).  The real `gxo run`
runs in a child process started by a small launcher (tests/rss.py), which reports that child's
own peak RSS (a child forked straight from pytest would count pytest's memory too).

Measured here: ~54 MB peak RSS, ~3 s wall.  The same playbook with `buffer_size: 2000000` (so
nothing throttles the producer) peaks at ~580 MB: 1 M buffered records cost ~0.5 KB each, so the
200 MB bound below would catch any channel that stops applying back-pressure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rss import launched, peak_mb

from tests.acceptance.harness import _env, tool

COUNT = 1_000_000
RSS_LIMIT_MB = 200

PLAYBOOK = f"""\
name: streams-memory
schemaVersion: "1.0.0"
channel_policy: {{buffer_size: 100, overflow_strategy: block}}
workloads:
  - name: gen
    lifecycle: {{policy: run_once}}
    process:
      module: test:producer
      params: {{count: {COUNT}, template: '{{"id": 7, "name": "record", "ok": true}}'}}
  - name: keep
    lifecycle: {{policy: run_once}}
    stream_inputs: [gen]
    process: {{module: data:filter, params: {{condition: "{{{{ .ok }}}}"}}}}
  - name: slow
    lifecycle: {{policy: run_once}}
    stream_inputs: [keep]
    process:
      module: data:map
      params: {{template: '{{"id": {{{{ .id * 2 }}}}, "n": "{{{{ .name | upper }}}}"}}'}}
"""


def test_slow_consumer_keeps_memory_bounded_with_1m_records(work: Path) -> None:
    pb = work / "memory.yaml"
    pb.write_text(PLAYBOOK)
    out_path = work / "events.jsonl"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(work / "stderr.txt", "wb") as err:
        # through the launcher (tests/rss.py): the command's own peak RSS, not pytest's
        proc = subprocess.run(launched([tool("gxo"), "run", str(pb), "--json"], work / "rss"), env=_env(None),
                              stdout=out, stderr=err, check=False)
    elapsed = time.monotonic() - started
    stderr = (work / "stderr.txt").read_text()
    assert proc.returncode == 0, stderr
    events = [json.loads(line) for line in out_path.read_text().splitlines() if line.strip()]

    peak = peak_mb(work / "rss")
    print(f"\n{COUNT} records, capacity 100, block: peak RSS {peak:.1f} MB, {elapsed:.1f} s")
    assert peak < RSS_LIMIT_MB, f"peak RSS {peak:.1f} MB: the channel did not throttle"

    end = next(e for e in events if e["type"] == "PlaybookEnd")
    assert end["status"] == "Completed"
    links = {(s["producer"], s["consumer"]): s for s in end["streams"]}
    for link in (("gen", "keep"), ("keep", "slow")):
        assert links[link]["records_in"] == COUNT, links[link]
        assert links[link]["records_out"] == COUNT, links[link]
        assert links[link]["records_dropped"] == 0, links[link]
    summaries = {e["workload"]: e["summary"] for e in events if e["type"] == "ModuleExecutionEnd"}
    assert summaries["keep"]["records_in"] == COUNT and summaries["keep"]["records_out"] == COUNT
    assert not [e for e in events if e["type"] == "RecordErrorOccurred"]


PIPELINE_COUNT = 300_000
PIPELINE_RSS_LIMIT_MB = 150

PIPELINE = f"""\
name: pipeline-memory
schemaVersion: "1.0.0"
workloads:
  - name: gen
    lifecycle: {{policy: run_once}}
    process: {{module: test:producer, params: {{count: {PIPELINE_COUNT}, template: '{{"n": 3, "g": "a"}}'}}}}
  - name: pipe
    lifecycle: {{policy: run_once}}
    stream_inputs: [gen]
    process:
      module: stream:pipeline
      params:
        steps:
          - {{id: sq, uses: data:map, with: {{template: '{{"g": "{{{{ .g }}}}", "sq": {{{{ .n * .n }}}}}}'}}}}
          - id: agg
            uses: data:aggregate
            with: {{count: 1000, group_by_fields: [g], aggregate_fields: [{{name: total, op: sum, source_field: sq}}]}}
  - name: sink
    lifecycle: {{policy: run_once}}
    stream_inputs: [pipe]
    process: {{module: passthrough}}
"""


def test_a_pipeline_with_an_aggregate_streams_in_bounded_memory(work: Path) -> None:
    """300,000 records through a stream:pipeline of data:map then data:aggregate (count windows):
    the aggregate runs once, fed batch by batch, so the pipeline never holds its input.
    Measured: ~54 MB peak; reading the input whole first (as with `needs`) peaks at ~400 MB."""
    pb = work / "pipeline.yaml"
    pb.write_text(PIPELINE)
    with open(work / "events.jsonl", "wb") as out, open(work / "stderr.txt", "wb") as err:
        # through the launcher (tests/rss.py): the command's own peak RSS, not pytest's
        proc = subprocess.run(launched([tool("gxo"), "run", str(pb), "--json"], work / "rss"), env=_env(None),
                              stdout=out, stderr=err, check=False)
    assert proc.returncode == 0, (work / "stderr.txt").read_text()
    peak = peak_mb(work / "rss")
    print(f"\n{PIPELINE_COUNT} records through a pipeline with an aggregate: peak RSS {peak:.1f} MB")
    assert peak < PIPELINE_RSS_LIMIT_MB, f"peak RSS {peak:.1f} MB: the pipeline held its input"
    events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines() if line.strip()]
    summary = [e["summary"] for e in events if e["type"] == "ModuleExecutionEnd" and e["workload"] == "pipe"][0]
    assert summary["records_processed"] == PIPELINE_COUNT
    assert summary["steps"]["agg"] == {"records_in": PIPELINE_COUNT, "groups_emitted": PIPELINE_COUNT // 1000}


REALISTIC_COUNT = 1_000_000

#: the pipeline of bench/streams.py (its count is a var, 1,000,000 by default), plus a check
#: of its result against the plain loop's
REALISTIC = (Path(__file__).resolve().parents[2] / "bench" / "realistic_pipeline.yaml").read_text("utf-8") + """\
  - name: check
    lifecycle: {policy: run_once}
    process:
      module: test:assert
      params:
        assertions:
          - {actual: "{{ .report.formatted_content }}", equal_to: '[{"records":500000,"total":250000000000}]'}
"""

# The same work as a plain Python loop: run seq, split its output, count and sum the odd numbers.
PLAIN_LOOP = f"""\
import json, subprocess
out = subprocess.run(["seq", "1", "{REALISTIC_COUNT}"], capture_output=True, text=True, check=True).stdout
records = total = 0
for line in out.splitlines():
    n = int(line)
    if n % 2 == 1:
        records += 1
        total += n
print(json.dumps([{{"records": records, "total": total}}]))
"""


def _peak_mb(argv: list[str], work: Path, name: str) -> tuple[float, str]:
    with open(work / f"{name}.out", "wb") as out, open(work / f"{name}.err", "wb") as err:
        # through the launcher (tests/rss.py): the command's own peak RSS, not pytest's
        proc = subprocess.run(launched(argv, work / f"{name}.rss"), env=_env(None), stdout=out, stderr=err,
                              check=False)
    assert proc.returncode == 0, (work / f"{name}.out").read_text() + (work / f"{name}.err").read_text()
    return peak_mb(work / f"{name}.rss"), (work / f"{name}.out").read_text()


def test_the_realistic_pipeline_peaks_near_a_plain_loop(work: Path) -> None:
    """`seq 1 1000000` -> data:parse text_lines -> data:map -> data:filter -> data:aggregate
    (whole stream) -> data:format, run by `gxo exec` of a built plan: data:parse sends its
    records as it parses instead of building all of them first, so the whole process peaks
    within 1.5x of a plain Python loop doing the same work.  Measured: 108-117 MB against the
    loop's 94 MB (it was 374 MB, 4x)."""
    pb = work / "realistic.yaml"
    pb.write_text(REALISTIC)
    plan = work / "realistic.gxp"
    built = subprocess.run([tool("gxoc"), "build", str(pb), "-o", str(plan)], env=_env(None),
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    gxo_mb, recap = _peak_mb([tool("gxo"), "exec", str(plan)], work, "gxo")
    plain_mb, plain_out = _peak_mb([sys.executable, "-c", PLAIN_LOOP], work, "plain")
    print(f"\nrealistic pipeline: gxo exec peak RSS {gxo_mb:.1f} MB, plain loop {plain_mb:.1f} MB")
    assert gxo_mb <= 1.5 * plain_mb, f"gxo exec peaked at {gxo_mb:.1f} MB, plain loop {plain_mb:.1f} MB"
    # the check workload compared the report with the plain loop's result
    assert json.loads(plain_out) == [{"records": 500000, "total": 250000000000}]
    assert "ok       check" in recap and "failed=0" in recap, recap
    assert "stream lines -> nums: in=1000000 out=1000000 dropped=0" in recap, recap
