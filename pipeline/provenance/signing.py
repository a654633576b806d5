"""The key that signs Content Credentials: one the user configures, else a local one made in REFSR_HOME on first use."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

LOCAL_DIR = "credentials"  # under REFSR_HOME
KEY_FILE, CHAIN_FILE = "signing-key.pem", "signing-chain.pem"
# Names in the local certificates say what they are and nothing about the user or the machine.
LOCAL_ORG = "refsr-album (local, unverified)"
LOCAL_SIGNER_CN = "refsr-album local signer"
LOCAL_CA_CN = "refsr-album local CA"
LOCAL_NOTICE = ("signed with refsr's local key (made in REFSR_HOME on first use): it proves integrity (the file "
                "is unchanged since refsr wrote it), not identity (not who wrote it)")
_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain (signer first, PEM) with its private key and the C2PA algorithm they use."""

    chain_pem: bytes
    key_pem: bytes
    alg: str  # c2pa's name: "es256", "es384", "ps256", "ed25519"
    local: bool  # refsr's own key: integrity only, no identity

    @property
    def subject(self) -> str:
        cert = x509.load_pem_x509_certificate(self.chain_pem)
        return cert.subject.rfc4514_string()


def _alg(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name not in by_curve:
            raise ValueError(f"signing key: elliptic curve {key.curve.name!r} is not one C2PA signs with "
                             f"({', '.join(by_curve)})")
        return by_curve[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ValueError(f"signing key: {type(key).__name__} is not an EC, RSA or Ed25519 private key")


def load_identity(key_path: Path, chain_path: Path) -> SigningIdentity:
    """The user's own key and certificate chain (PEM files; the chain signer-first, as C2PA wants it)."""
    for name, path in (("signing key", key_path), ("certificate chain", chain_path)):
        if not Path(path).is_file():
            raise ValueError(f"{name} {str(path)!r} is not a file")
    key_pem, chain_pem = Path(key_path).read_bytes(), Path(chain_path).read_bytes()
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        certs = x509.load_pem_x509_certificates(chain_pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot read the signing key or certificate chain: {exc}") from None
    if certs[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            != key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ValueError(f"the first certificate of {str(chain_path)!r} is not the signing key's certificate")
    return SigningIdentity(chain_pem, key_pem, _alg(key), local=False)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, LOCAL_ORG)])


def _usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not sign, crl_sign=not sign,
                         encipher_only=False, decipher_only=False)


def make_local_chain() -> tuple[bytes, bytes]:
    """A fresh local CA and an ES256 signer it issued: (signer + CA chain PEM, signer key PEM).

    Two certificates rather than one self-signed signer: the C2PA certificate profile that the
    library checks refuses a self-signed signing certificate, and wants digitalSignature usage
    with an extended key usage (emailProtection is the one its own test certificates carry).
    """
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # a little slack for clock skew
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, issuer: str, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer)).public_key(public)
                .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + _VALIDITY)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))

    ca = (builder(LOCAL_CA_CN, LOCAL_CA_CN, ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_usage(sign=False), critical=True).sign(ca_key, hashes.SHA256()))
    signer = (builder(LOCAL_SIGNER_CN, LOCAL_CA_CN, key.public_key())
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(_usage(sign=True), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    chain = signer.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return chain, key_pem


def local_identity(home: Path) -> SigningIdentity:
    """refsr's local key in ``<home>/credentials``, made on first use.

    The key and its chain are written into a temporary folder that is then renamed into place, so
    two processes starting at once end up with one pair that belongs together (the loser's folder is
    removed and it reads the winner's). The key file is readable by its owner only.
    """
    folder = Path(home) / LOCAL_DIR
    if not (folder / KEY_FILE).is_file():
        Path(home).mkdir(parents=True, exist_ok=True)
        chain, key_pem = make_local_chain()
        tmp = Path(tempfile.mkdtemp(prefix=f".{LOCAL_DIR}.", dir=home))
        try:
            fd = os.open(tmp / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key_pem)
            (tmp / CHAIN_FILE).write_bytes(chain)
            os.rename(tmp, folder)
            logger.warning("created a local signing key in %s: %s", folder, LOCAL_NOTICE)
        except OSError:
            if not (folder / KEY_FILE).is_file():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    identity = load_identity(folder / KEY_FILE, folder / CHAIN_FILE)
    return SigningIdentity(identity.chain_pem, identity.key_pem, identity.alg, local=True)
