"""The live view (a terminal's output): workload states, link rates and operator state."""

from __future__ import annotations

import io

from rich.console import Console

from gxo.runtime.output import LiveView


def _render(view: LiveView) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(view._table())
    return out.getvalue()


def _link(out: int, dropped: int = 0) -> dict:
    return {"producer": "users", "consumer": "joined", "records_in": out + dropped,
            "records_out": out, "records_dropped": dropped}


def test_link_rates_and_the_state_a_running_join_holds() -> None:
    view = LiveView(["users", "joined"], io.StringIO())
    view({"type": "WorkloadStatusChanged", "workload": "joined", "new_status": "Running"})
    view({"type": "StreamProgress", "timestamp": 10.0, "streams": [_link(1000)],
          "operator_state": {"joined": 1500}})
    view({"type": "StreamProgress", "timestamp": 10.5, "streams": [_link(3000, dropped=7)],
          "operator_state": {"joined": 4200}})
    text = _render(view)
    assert "users -> joined" in text and "3,000 records" in text
    assert "4,000/s" in text  # 2,000 records in 0.5 s
    assert "7 dropped" in text
    assert "holding 4,200 state entries" in text
    view({"type": "WorkloadStatusChanged", "workload": "joined", "new_status": "Completed"})
    assert "state entries" not in _render(view)  # only a running workload holds state
