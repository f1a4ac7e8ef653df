"""The weekly release digest's scheduler job (terraform/scheduler.tf) publishes what
kpi_refresh accepts, and kpi_refresh may publish the digest (docs/metrics.md)."""

from __future__ import annotations

from shared.events import ReportRequested
from shared.kpi import parse
from tests.infra.hcl import first, load

TF = load()


def test_scheduler_asks_kpi_refresh_for_the_weekly_report_in_the_shape_it_accepts() -> None:
    job = TF.resource("google_cloud_scheduler_job", "release_report")
    target = first(job["pubsub_target"])
    assert 'google_pubsub_topic.topic["kpi-refresh"]' in target["topic_name"]
    attributes = target["attributes"]
    assert attributes == {"type": "sight.ops.report.requested", "source": "cloud-scheduler"}
    assert "days = 7" in target["data"]
    request = parse(b'{"days": 7}', attributes)
    assert request == ReportRequested(days=7)
    assert job["schedule"] == "${var.release_report_schedule}"
    *_, weekday = TF.variables["release_report_schedule"]["default"].split()
    assert weekday == "1", "weekly, on Mondays"


def test_kpi_refresh_may_publish_the_digest_to_ops_events() -> None:
    functions = TF.locals["functions"]
    assert functions["kpi_refresh"]["publishes"] == ["ops-events"]
    assert "ops-events" in functions["notify"]["topics"]
