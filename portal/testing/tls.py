"""Throwaway TLS material for tests: a CA, and server certificates it signs, made with openssl."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerCertificate:
    """A server's certificate and key files, and the CA file that verifies them."""

    cert_file: Path
    key_file: Path
    ca_file: Path


def openssl_path() -> str | None:
    """The openssl binary, or None when it is not installed."""
    return shutil.which("openssl")


def make_ca(folder: Path, name: str = "Portal Test CA") -> tuple[Path, Path]:
    """Create a self-signed CA; return (certificate file, key file)."""
    cert, key = folder / f"{_slug(name)}.pem", folder / f"{_slug(name)}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign",
    )  # fmt: skip
    return cert, key


def make_server_certificate(
    folder: Path, ca: tuple[Path, Path] | None, subject_alt_names: str
) -> ServerCertificate:
    """Create a server certificate for the given SANs, signed by `ca` (or self-signed if None).

    `subject_alt_names` is openssl syntax, e.g. "IP:127.0.0.1,DNS:localhost".
    """
    stem = _slug(subject_alt_names)
    cert, key, request = folder / f"{stem}.crt", folder / f"{stem}.key", folder / f"{stem}.csr"
    extensions = folder / f"{stem}.ext"
    extensions.write_text(f"subjectAltName={subject_alt_names}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=directory",
        "-keyout", str(key), "-out", str(request),
    )  # fmt: skip
    signer = ["-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial"] if ca else [
        "-signkey", str(key)
    ]  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-days", "2", "-out", str(cert),
        "-extfile", str(extensions), *signer,
    )  # fmt: skip
    key.chmod(0o600)
    return ServerCertificate(cert, key, ca[0] if ca else cert)


def _openssl(*args: str) -> None:
    result = subprocess.run([openssl_path() or "openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() else "-" for char in text).strip("-").lower()
