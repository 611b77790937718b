"""python -m server.devcerts [--out var/certs]: a local CA and certificates to try
mutual TLS on one machine (`make certs`).

Writes ca.pem, server.pem / server-key.pem (for localhost and 127.0.0.1), client
certificates for order-service, collections-bot, operator and risk-analyst (the subject alternative
name is the caller's name), a client signed by another CA (rogue), an access.json that
gives each caller its methods, and an operator token with its hash."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import json
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACCESS = {
    "order-service": ["credit.v1.CheckoutService/*", "credit.v1.CreditLineService/GetAccount",
                      "credit.v1.RepaymentService/GetLoan"],
    "collections-bot": ["credit.v1.CollectionsService/*", "credit.v1.RepaymentService/GetLoan"],
    "operator": ["*"],
    # The lender's view: aggregates only (no account's data), and reflection for grpcurl.
    "risk-analyst": ["credit.v1.RiskService/GetPortfolioReport", "credit.v1.RiskService/RunStressTest",
                     "credit.v1.RiskService/GetReservePool", "grpc.reflection.v1alpha.ServerReflection/*"],
}


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "credit dev"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False,
                 dns: list[str] | None = None, ips: list[str] | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    names = [x509.DNSName(d) for d in dns or []] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(out: Path, name: str, certificate: x509.Certificate, key=None) -> None:
    (out / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path = out / f"{name}-key.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)


def make(out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _certificate("credit dev CA", ca_key, _name("credit dev CA"), ca_key, ca=True)
    _write(out, "ca", ca)
    server_key = _key()
    _write(out, "server", _certificate("localhost", server_key, ca.subject, ca_key, dns=["localhost"],
                                       ips=["127.0.0.1"]), server_key)
    for caller in ACCESS:
        key = _key()
        _write(out, caller, _certificate(caller, key, ca.subject, ca_key, dns=[caller]), key)
    rogue_ca_key = _key()
    rogue_key = _key()
    _write(out, "rogue", _certificate("operator", rogue_key, _name("rogue CA"), rogue_ca_key, dns=["operator"]),
           rogue_key)
    token = secrets.token_urlsafe(32)
    (out / "operator.token").write_text(token + "\n")
    (out / "operator.token").chmod(0o600)
    access = {"callers": ACCESS, "tokens": {hashlib.sha256(token.encode()).hexdigest(): "operator"},
              "public": ["grpc.health.v1.Health/Check"]}
    (out / "access.json").write_text(json.dumps(access, indent=2) + "\n")
    return {"AUTH_MODE": "mtls", "TLS_CERT_FILE": str(out / "server.pem"), "TLS_KEY_FILE": str(out / "server-key.pem"),
            "TLS_CLIENT_CA_FILE": str(out / "ca.pem"), "ACCESS_FILE": str(out / "access.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("var/certs"))
    args = parser.parse_args()
    settings = make(args.out)
    print(f"written to {args.out}/; start the server with:")
    print("  " + " ".join(f"{k}={v}" for k, v in settings.items()) + " make run")


if __name__ == "__main__":
    main()
