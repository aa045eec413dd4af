"""TLS for the server: the ``--ssl-*`` options turned into an ``ssl.SSLContext`` that
create_server wraps every connection with. Each bad option is reported by name (a ConfigError),
never as an OpenSSL traceback."""

from __future__ import annotations

import ssl
from typing import Any

from cicada.config import ConfigError

# uvicorn's defaults, except the cipher list: uvicorn's "TLSv1" would narrow TLS 1.2 to CBC-SHA1
# suites, so without --ssl-ciphers we keep OpenSSL's (safer) defaults.
DEFAULT_SSL_VERSION = int(ssl.PROTOCOL_TLS_SERVER)
DEFAULT_CERT_REQS = int(ssl.CERT_NONE)


def _protocol(version: Any) -> ssl._SSLMethod:
    try:
        protocol = ssl._SSLMethod(int(version))
    except (TypeError, ValueError):
        choices = ", ".join(f"{int(p)} ({p.name})" for p in ssl._SSLMethod)
        raise ConfigError("ssl_version", f"{version!r} is not one of {choices}") from None
    if protocol == ssl.PROTOCOL_TLS_CLIENT:
        raise ConfigError("ssl_version", f"{int(protocol)} (PROTOCOL_TLS_CLIENT) is for clients, not a server")
    return protocol


def _verify_mode(cert_reqs: Any) -> ssl.VerifyMode:
    try:
        return ssl.VerifyMode(int(cert_reqs))
    except (TypeError, ValueError):
        choices = ", ".join(f"{int(m)} ({m.name})" for m in ssl.VerifyMode)
        raise ConfigError("ssl_cert_reqs", f"{cert_reqs!r} is not one of {choices}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        return exc.strerror
    return str(exc) or type(exc).__name__


def create_ssl_context(
    certfile: str | None,
    keyfile: str | None = None,
    password: str | None = None,
    ssl_version: int | None = None,
    cert_reqs: int | None = None,
    ca_certs: str | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A server-side SSLContext from the --ssl-* values (None means the default)."""
    if not certfile:
        raise ConfigError("ssl_certfile", "a certificate file is needed for TLS (--ssl-keyfile alone is not enough)")
    ctx = ssl.SSLContext(_protocol(DEFAULT_SSL_VERSION if ssl_version is None else ssl_version))
    asked = []

    def key_password() -> str:
        # Always a callback: without one OpenSSL would prompt on the terminal for an encrypted key.
        asked.append(True)
        if password is None:
            raise ConfigError("ssl_keyfile_password", f"the key in {keyfile or certfile!r} is encrypted: give its password")
        return password

    try:
        ctx.load_cert_chain(certfile, keyfile, key_password)
    except ConfigError:
        raise
    except FileNotFoundError as exc:
        missing = exc.filename or (keyfile if keyfile else certfile)
        option = "ssl_keyfile" if keyfile and missing == keyfile else "ssl_certfile"
        raise ConfigError(option, f"{missing!r}: no such file") from None
    except (ssl.SSLError, OSError, ValueError, TypeError) as exc:
        if asked:
            raise ConfigError("ssl_keyfile_password", f"it does not decrypt the key in {keyfile or certfile!r}") from None
        names = f"{certfile!r}" + (f" with key {keyfile!r}" if keyfile else "")
        raise ConfigError("ssl_certfile", f"cannot load the certificate chain {names}: {_describe(exc)}") from None
    ctx.verify_mode = _verify_mode(DEFAULT_CERT_REQS if cert_reqs is None else cert_reqs)
    if ca_certs:
        try:
            ctx.load_verify_locations(ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("ssl_ca_certs", f"cannot load {ca_certs!r}: {_describe(exc)}") from None
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise ConfigError("ssl_ciphers", f"{ciphers!r} selects no cipher OpenSSL knows") from None
    return ctx

