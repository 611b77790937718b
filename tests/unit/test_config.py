"""A bad setting stops the process with a message naming it."""

from __future__ import annotations

import pytest

from server.config import Settings, SettingsError


def test_defaults_make_a_working_local_server():
    settings = Settings.from_env({"AUTH_MODE": "insecure-local"})
    assert settings.grpc_listen_addr == "127.0.0.1:50051"
    assert settings.database_url is None
    assert settings.hold_ttl_s == 1800
    assert settings.max_apr_bps == 2400
    assert settings.temporary_limit_max_days == 90
    assert settings.payment_due_days == 20


@pytest.mark.parametrize("env, name", [
    ({"GRPC_LISTEN_ADDR": "no-port"}, "GRPC_LISTEN_ADDR"),
    ({"HOLD_TTL_S": "soon"}, "HOLD_TTL_S"),
    ({"HOLD_TTL_S": "0"}, "HOLD_TTL_S"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
    ({"DB_POOL_MIN_SIZE": "20", "DB_POOL_MAX_SIZE": "10"}, "DB_POOL_MIN_SIZE"),
    ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ({"TEMPORARY_LIMIT_MAX_DAYS": "0"}, "TEMPORARY_LIMIT_MAX_DAYS"),
    ({"TEMPORARY_LIMIT_MAX_DAYS": "a quarter"}, "TEMPORARY_LIMIT_MAX_DAYS"),
    # A bill falls due before the next statement: at most 27 days.
    ({"PAYMENT_DUE_DAYS": "28"}, "PAYMENT_DUE_DAYS"),
    ({"PAYMENT_DUE_DAYS": "0"}, "PAYMENT_DUE_DAYS"),
    ({"PAYMENT_GATEWAY_ADDR": "gateway"}, "PAYMENT_GATEWAY_ADDR"),
    ({"PAYMENT_GATEWAY_TIMEOUT_MS": "50"}, "PAYMENT_GATEWAY_TIMEOUT_MS"),
])
def test_a_bad_setting_is_named(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({"AUTH_MODE": "insecure-local", **env})


def test_without_authentication_the_server_only_listens_on_loopback():
    assert Settings.from_env({"AUTH_MODE": "insecure-local"}).auth_mode == "insecure-local"
    with pytest.raises(SettingsError, match="loopback"):
        Settings.from_env({"AUTH_MODE": "insecure-local", "GRPC_LISTEN_ADDR": "0.0.0.0:50051"})


def test_mutual_tls_is_the_default_and_names_what_it_needs():
    with pytest.raises(SettingsError, match="TLS_CERT_FILE"):
        Settings.from_env({"AUTH_MODE": "mtls"})
    with pytest.raises(SettingsError, match="AUTH_MODE"):
        Settings.from_env({"AUTH_MODE": "trust-me"})
    with pytest.raises(SettingsError, match="TLS_KEY_FILE"):
        Settings.from_env({"TLS_CERT_FILE": __file__})


@pytest.mark.parametrize("address", ["127.evil.example:50051", "0.0.0.0:50051", "10.0.0.5:50051"])
def test_a_name_that_only_looks_like_loopback_is_refused(address):
    with pytest.raises(SettingsError, match="loopback"):
        Settings.from_env({"AUTH_MODE": "insecure-local", "GRPC_LISTEN_ADDR": address})


@pytest.mark.parametrize("address", ["localhost:1", "127.0.0.2:1", "[::1]:1"])
def test_real_loopback_addresses_are_accepted(address):
    assert Settings.from_env({"AUTH_MODE": "insecure-local", "GRPC_LISTEN_ADDR": address}).auth_mode


def test_one_server_process_by_default():
    assert Settings.from_env({"AUTH_MODE": "insecure-local"}).server_processes == 1
    assert Settings.from_env({"AUTH_MODE": "insecure-local", "SERVER_PROCESSES": "16"}).server_processes == 16


@pytest.mark.parametrize("value", ["0", "-1", "65", "two", "1.5"])
def test_a_bad_number_of_server_processes_is_named(value):
    with pytest.raises(SettingsError, match="SERVER_PROCESSES"):
        Settings.from_env({"AUTH_MODE": "insecure-local", "SERVER_PROCESSES": value})



def test_the_payment_gateway_is_optional_for_the_server_and_the_bot():
    from collections_bot.config import BotSettings

    assert Settings.from_env({"AUTH_MODE": "insecure-local"}).payment_gateway_addr is None
    assert BotSettings.from_env({}).payment_gateway_addr is None
    env = {"AUTH_MODE": "insecure-local", "PAYMENT_GATEWAY_ADDR": "127.0.0.1:50071"}
    assert Settings.from_env(env).payment_gateway_addr == "127.0.0.1:50071"
    assert BotSettings.from_env(env).payment_gateway_addr == "127.0.0.1:50071"
    with pytest.raises(SettingsError, match="PAYMENT_GATEWAY_ADDR"):
        BotSettings.from_env({"PAYMENT_GATEWAY_ADDR": "127.0.0.1:port"})
    # How long a payout waits for the gateway, and when the bot looks a pending one up.
    assert Settings.from_env(env).payment_gateway_timeout_s == 10.0
    assert Settings.from_env({**env, "PAYMENT_GATEWAY_TIMEOUT_MS": "250"}).payment_gateway_timeout_s == 0.25
    assert BotSettings.from_env({}).payment_reconcile_after_s == 60
    with pytest.raises(SettingsError, match="PAYMENT_RECONCILE_AFTER_S"):
        BotSettings.from_env({"PAYMENT_RECONCILE_AFTER_S": "0"})
