"""One shape of an alert (retrywatch/detect/schema.py), for every consumer."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from retrywatch.detect.core import DetectorConfig
from retrywatch.detect.schema import AlertData, ConnectionData, saved_alert
from retrywatch.forensics.replay import replay

ROOT = Path(__file__).resolve().parent.parent
STORM = ROOT / "sample_logs" / "scenario-http-lua-storm.error.log.gz"
ALERT = TypeAdapter(AlertData)


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    result = replay([str(STORM)], tz=ZoneInfo("UTC"), config=DetectorConfig())
    return [dict(a.to_dict()) for a in result.alerts]


def test_every_alert_is_the_declared_shape(alerts: list[dict[str, Any]]) -> None:
    assert len(alerts) == 5
    keys = AlertData.__required_keys__ | AlertData.__optional_keys__
    for alert in alerts:
        assert ALERT.validate_python(alert, strict=True) == alert
        assert set(alert) == keys  # every declared field, nothing undeclared


def test_an_undeclared_field_is_refused(alerts: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationError):
        ALERT.validate_python({**alerts[0], "extra": 1})
    with pytest.raises(ValidationError):
        ALERT.validate_python({**alerts[0], "confidence": "maybe"})


def test_saved_alerts_of_an_older_version_are_completed(alerts: list[dict[str, Any]]) -> None:
    old = {k: v for k, v in alerts[0].items()
           if k not in ("confidence", "evidence", "configuration", "distinct_requests")}
    old["removed_since"] = "x"  # a field an older version wrote
    back = saved_alert(old)
    assert back["confidence"] == "suspected"  # what an alert of before confidence was
    assert back["evidence"] == [] and back["distinct_requests"] == 0
    assert "removed_since" not in back
    assert {k: v for k, v in back.items() if k in old} == {
        k: v for k, v in old.items() if k != "removed_since"}
    assert saved_alert(alerts[0]) == alerts[0]


@pytest.mark.parametrize("bad", [{}, {"id": 1}, {"id": "x", "state": "gone", "source": "s"}])
def test_a_saved_alert_that_is_none_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        saved_alert(bad)


def test_connection_shape() -> None:
    schema = TypeAdapter(ConnectionData).json_schema()
    assert set(schema["required"]) == set(ConnectionData.__required_keys__)


def test_the_api_schema_is_the_declared_shape() -> None:
    """The OpenAPI schema of an alert and a connection is made from the TypedDicts: no
    second declaration that could drift (a field added to AlertData appears here)."""
    from fastapi.testclient import TestClient  # late: it warns at import (see test_api.py)
    from service_harness import new_engine

    from retrywatch.serve.api import create_app

    with TestClient(create_app(new_engine())) as c:
        schema = c.get("/openapi.json").json()
    parts = schema["components"]["schemas"]
    alert = parts["AlertData"]
    assert set(alert["properties"]) == AlertData.__required_keys__ | AlertData.__optional_keys__
    assert set(alert["required"]) == AlertData.__required_keys__
    assert alert["additionalProperties"] is False
    assert "Only confirmed alerts page" in alert["properties"]["confidence"]["description"]
    assert parts["AlertList"]["properties"]["alerts"]["items"] == {
        "$ref": "#/components/schemas/AlertData"}
    one = schema["paths"]["/api/v1/alerts/{alert_id}"]["get"]["responses"]["200"]
    assert one["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AlertData"}
    connection = parts["ConnectionData"]
    assert set(connection["properties"]) == ConnectionData.__required_keys__
    assert parts["ConnectionList"]["properties"]["connections"]["items"] == {
        "$ref": "#/components/schemas/ConnectionData"}
    assert not {"AlertOut", "Connection", "Diagnosis"} & set(parts)
