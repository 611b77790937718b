"""The access file is refused unless it has exactly the documented shape."""

from __future__ import annotations

import hashlib
import json

import pytest

from server.auth import AccessPolicy


def write(tmp_path, data) -> AccessPolicy:
    path = tmp_path / "access.json"
    path.write_text(json.dumps(data))
    return AccessPolicy.load(path)


def test_a_string_where_a_list_belongs_is_refused_not_read_as_star(tmp_path):
    with pytest.raises(ValueError, match="list of method patterns"):
        write(tmp_path, {"callers": {"bot": "credit.v1.CollectionsService/*"}})
    with pytest.raises(ValueError, match="public"):
        write(tmp_path, {"callers": {}, "public": "grpc.health.v1.Health/*"})


def test_token_hashes_must_be_lowercase_hex_naming_a_caller(tmp_path):
    digest = hashlib.sha256(b"t").hexdigest()
    with pytest.raises(ValueError, match="sha256"):
        write(tmp_path, {"callers": {"op": ["*"]}, "tokens": {digest.upper(): "op"}})
    with pytest.raises(ValueError, match="sha256"):
        write(tmp_path, {"callers": {"op": ["*"]}, "tokens": {digest: "nobody"}})
    policy = write(tmp_path, {"callers": {"op": ["*"]}, "tokens": {digest: "op"}})
    assert policy.caller_for_token("t") == "op" and policy.caller_for_token("ü") is None


def test_only_the_health_check_is_public_by_default_and_an_empty_list_means_none(tmp_path):
    policy = write(tmp_path, {"callers": {"order-service": ["credit.v1.CheckoutService/*"]}})
    assert policy.is_public("/grpc.health.v1.Health/Check") and not policy.is_public("/grpc.health.v1.Health/Watch")
    assert policy.allows("order-service", "/credit.v1.CheckoutService/Authorize")
    assert not policy.allows("order-service", "/credit.v1.CreditLineService/AdjustLimit")
    assert not write(tmp_path, {"callers": {}, "public": []}).is_public("/grpc.health.v1.Health/Check")
