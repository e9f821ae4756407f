"""How to reach the coordinator(s): addresses (a leader and its standbys, tried in order; a standby's
`rbdbackup-leader` trailer redirects to the leader), TLS files and/or a bearer token, deadlines and
the retry budget for UNAVAILABLE. Plain data, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ClientConfig:
    # "host:port" of each coordinator; the first that answers is used.
    addresses: List[str] = field(default_factory=list)
    # PEM CA that signs the coordinator's certificate; with cert_file and key_file: mutual TLS.
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    # Bearer token (sent as `authorization: Bearer <token>`); with ca_file only, or with insecure.
    token: Optional[str] = None
    # Plaintext: only for tests against a coordinator started with tls.insecure.
    insecure: bool = False
    # Host name the coordinator's certificate must name (default: coordinator.rbdbackup.invalid, which
    # deploy/tls/gen-certs.sh puts in a coordinator's certificate only; set it for certificates from
    # another CA, to the coordinator's host name).
    server_name: Optional[str] = None
    # Deadline of each unary call, seconds.
    call_timeout: float = 30.0
    # Attempts of a call that gets UNAVAILABLE (no coordinator, a standby, no agent connected), and the
    # backoff between them: full jitter, base doubling up to max.
    # 10 attempts at base 0.5 s, max 10 s: ~28 s of waits on average (full jitter), longer than a
    # coordinator failover (the lease, ~6 s, then the agents reconnecting).
    attempts: int = 10
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    # wait(): how long no coordinator may be reachable while following a job before it gives up
    # (UNAVAILABLE), seconds — shorter than a job's own timeout, so that a coordinator lost mid-job does
    # not keep the caller (and Cinder's volume) waiting for a day.
    unreachable_timeout: float = 600.0

    def validate(self) -> "ClientConfig":
        if not self.addresses:
            raise ValueError("rbdbackup client: no coordinator address configured")
        for a in self.addresses:
            host, _, port = a.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"rbdbackup client: address {a!r} is not host:port")
        if not self.insecure:
            if not self.ca_file:
                raise ValueError("rbdbackup client: TLS needs ca_file (or insecure for tests)")
            if bool(self.cert_file) != bool(self.key_file):
                raise ValueError("rbdbackup client: cert_file and key_file go together")
            if not self.cert_file and not self.token:
                raise ValueError("rbdbackup client: give a client certificate (cert_file, key_file) or a token")
        if self.call_timeout <= 0 or self.attempts < 1 or self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("rbdbackup client: call_timeout > 0, attempts >= 1, backoff >= 0")
        if self.unreachable_timeout <= 0:
            raise ValueError("rbdbackup client: unreachable_timeout > 0")
        return self
