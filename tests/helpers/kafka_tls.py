"""Certificates and SASL settings of a secured test cluster (SASL_SSL, SCRAM-SHA-512): a
CA and a broker certificate made by the test, and what a client needs to connect."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers.kafka_nodes import HOST

SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Security:
    """SASL_SSL settings of a secured cluster: what a client needs to connect."""

    ca_file: Path
    username: str
    password: str
    mechanism: str = SCRAM_MECHANISM

    def ssl_context(self, ca_file: Path | None = None) -> ssl.SSLContext:
        """A client TLS context trusting ``ca_file`` (default: the cluster's CA)."""
        from aiokafka.helpers import create_ssl_context

        context: ssl.SSLContext = create_ssl_context(cafile=str(ca_file or self.ca_file))
        return context

    def client_kwargs(
        self, *, password: str | None = None, ca_file: Path | None = None
    ) -> dict[str, Any]:
        """aiokafka keyword arguments (security_protocol, sasl_*, ssl_context)."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password if password is None else password,
            "ssl_context": self.ssl_context(ca_file),
        }

    def java_client_properties(self) -> str:
        """The same settings for Kafka's Java tools (``--command-config``)."""
        return (
            "security.protocol=SASL_SSL\n"
            f"sasl.mechanism={self.mechanism}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{self.username}" password="{self.password}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={self.ca_file}\n"
        )


def make_ca(directory: Path, name: str = "wb-test-ca") -> tuple[Path, Path]:
    """A self-signed CA: (certificate PEM, private key PEM) in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_server_pem(
    directory: Path, ca_cert: Path, ca_key: Path, hosts: Sequence[str] = (HOST, "localhost")
) -> Path:
    """A broker key and certificate signed by the CA, in one PEM file (PKCS#8 key first, then
    the certificate chain), as Kafka's ``ssl.keystore.type=PEM`` reads it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, rsa.RSAPrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wb-test-kafka")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    path = directory / "broker.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
        + ca.public_bytes(serialization.Encoding.PEM)
    )
    return path
