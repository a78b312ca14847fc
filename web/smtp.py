"""One SMTP delivery, with the standard library's ``smtplib`` in a worker thread.

``smtp_url`` picks the transport: ``smtp://`` (plain, for a relay on localhost), ``smtp+starttls://``
(STARTTLS required: a server that does not offer it is an error, never a silent downgrade) and
``smtps://`` (implicit TLS). Certificates are verified against the system store, or against
``smtp_ca_file`` alone when given. Credentials come from the URL's user info and never appear in
an error, a log line or the delivery log.

Errors (``SmtpFailed``): ``permanent`` when the server refused the mail for good (a 5xx answer
to the sender, a recipient or the data); everything else (connection refused, timeout, TLS
failure, 4xx, authentication) is worth retrying.

Threads: at most ``mail_threads`` dialogues at once (a ``CapacityLimiter``). Every socket
operation has ``smtp_timeout_s``, so a thread never outlives a cancelled caller by more than
that; the caller is not abandoned to it (``abandon_on_cancel=False``).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import attrs
import trio

from web.errors import ConfigError


class SmtpFailed(Exception):
    """A delivery attempt failed; ``summary`` (error class and SMTP code) is safe to store."""

    def __init__(self, summary: str, *, permanent: bool) -> None:
        super().__init__(summary)
        self.summary = summary
        self.permanent = permanent


@attrs.frozen(kw_only=True)
class SmtpTarget:
    """Where and how to deliver, parsed once from ``smtp_url``."""

    scheme: str  # smtp, smtp+starttls, smtps
    host: str
    port: int
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    ca_file: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_url(cls, url: str, *, ca_file: str | None, timeout_s: float) -> SmtpTarget:
        parts = urlsplit(url)
        default_port = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}.get(parts.scheme)
        if default_port is None or not parts.hostname:
            raise ConfigError("setting 'smtp_url': use smtp://, smtp+starttls:// or smtps://")
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=ca_file,
            timeout_s=timeout_s,
        )

    def tls_context(self) -> ssl.SSLContext:
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=self.ca_file)
        return ssl.create_default_context()


def _summary(err: BaseException) -> SmtpFailed:
    """Classify without keeping the server's text (it may echo addresses or our user name)."""
    name = type(err).__name__
    if isinstance(err, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in err.recipients.values()})
        permanent = bool(codes) and all(500 <= c < 600 for c in codes)
        return SmtpFailed(f"{name} {','.join(map(str, codes))}", permanent=permanent)
    if isinstance(err, smtplib.SMTPAuthenticationError):
        return SmtpFailed(f"{name} {err.smtp_code}", permanent=False)
    if isinstance(err, smtplib.SMTPResponseException):
        code = err.smtp_code
        permanent = 500 <= code < 600 and isinstance(
            err, smtplib.SMTPSenderRefused | smtplib.SMTPDataError
        )
        return SmtpFailed(f"{name} {code}", permanent=permanent)
    if isinstance(err, smtplib.SMTPNotSupportedError):
        return SmtpFailed(f"{name} (the server does not offer STARTTLS or AUTH)", permanent=False)
    if isinstance(err, ssl.SSLError):
        return SmtpFailed(f"{name} {err.reason or ''}".strip(), permanent=False)
    if isinstance(err, TimeoutError | socket.timeout):
        return SmtpFailed("timeout", permanent=False)
    return SmtpFailed(name, permanent=False)


def deliver_blocking(target: SmtpTarget, message: EmailMessage) -> None:
    """Send one message (in a worker thread). Raises ``SmtpFailed``."""
    try:
        client: smtplib.SMTP
        if target.scheme == "smtps":
            client = smtplib.SMTP_SSL(
                target.host, target.port, timeout=target.timeout_s, context=target.tls_context()
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=target.timeout_s)
        with client:
            client.ehlo()
            if target.scheme == "smtp+starttls":
                if not client.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError("STARTTLS not offered")
                client.starttls(context=target.tls_context())
                client.ehlo()
            if target.username is not None:
                client.login(target.username, target.password or "")
            client.send_message(message)
    except Exception as err:  # the edge of smtplib: every failure becomes one SmtpFailed
        raise _summary(err) from None


async def deliver(target: SmtpTarget, message: EmailMessage, limiter: trio.CapacityLimiter) -> None:
    """Send one message from a worker thread bounded by ``limiter``. Raises ``SmtpFailed``.

    On cancel the caller waits for the thread, which ends within the socket timeout.
    """
    await trio.to_thread.run_sync(deliver_blocking, target, message, limiter=limiter)
