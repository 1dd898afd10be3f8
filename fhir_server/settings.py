"""One Settings object for the whole hub, read from `YILIAN_*` environment variables and CLI flags.

Built once in the composition root (`cli.py`) and passed down; nothing reads the environment at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["member", "reader", "admin", "auditor"]


class ApiClientEntry(BaseModel):
    """One registered API client: its name (the agent of its AuditEvents), the member it belongs to
    (the Organization code under `urn:yilian:member`), and its role (`fhir_server/api/access.py`)."""

    client: str
    member: str | None = None
    role: Role = "member"

    @model_validator(mode="after")
    def _member_roles_name_a_member(self) -> ApiClientEntry:
        if self.role in ("member", "reader") and not self.member:
            raise ValueError(f"client {self.client!r} has role {self.role!r} and needs its member's code")
        return self


class SmartClientEntry(ApiClientEntry):
    """A SMART Backend Services client (`api/smart.py`): its name, member and role as for a token, the
    public keys it signs its assertions with (a JWKS: `{"keys": [...]}`, RS384 or ES384), and the
    scopes it may be granted (SMART v1 `system/<Type>.read|write|*` or v2 `system/<Type>.cruds`)."""

    jwks: dict[str, Any]
    scope: str = "system/*.read"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="YILIAN_", extra="ignore")

    # FHIR API
    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = "/fhir"
    public_base_url: str | None = None  # e.g. https://hub.example.cn/fhir behind a proxy
    db: Path = Path("data/yilian.db")
    storage: str = "sqlite"  # sqlite | memory | mongodb
    mongodb_uri: str | None = None
    mongodb_database: str = "yilian"
    max_body_bytes: int = 16 * 1024 * 1024
    max_http_connections: int = 512  # beyond this uvicorn answers 503 instead of queueing without bound
    max_bundle_entries: int = 10_000
    max_json_depth: int = 64
    default_page_size: int = 20
    max_page_size: int = 1000
    # bearer token -> client (JSON in env): "<client name>" (an admin client, as before) or
    # {"client": "...", "member": "<member code>", "role": "member|reader|admin|auditor"}
    api_tokens: dict[str, str | ApiClientEntry] = Field(default_factory=dict)
    smart_clients: dict[str, SmartClientEntry] = Field(default_factory=dict)  # client_id → client
    smart_token_seconds: int = 300  # lifetime of an access token the SMART token endpoint issues
    allow_open_network: bool = False  # serve FHIR on a non-loopback address without tokens (not advised)
    audit_flush_seconds: float = 1.0  # AuditEvents of every access are written in batches this often
    # Consortium record: Patient/$match grades below a resident-ID match (interactions/matching.py)
    match_possible: float = 0.55  # score from which a candidate is a `possible` match
    match_probable: float = 0.85  # score from which it is `probable` (still never linked automatically)
    match_review: bool = True  # put member records with probable/possible matches on the review list
    match_review_seconds: float = 0.5  # a burst of Patient writes is reviewed this long after it starts

    # HL7 v2 / MLLP
    mllp_host: str = "127.0.0.1"
    mllp_port: int = 2575  # 0 disables the listener
    mllp_max_message_bytes: int = 4 * 1024 * 1024
    mllp_max_connections: int = 256
    # MLLP over TLS (`adapters/hl7v2/tls.py`): the listener's certificate and key (PEM); with the CA set
    # too, senders must present a certificate from it (mutual TLS), and mllps:// members are verified
    mllp_tls_cert: Path | None = None
    mllp_tls_key: Path | None = None
    mllp_tls_ca: Path | None = None
    hl7_journal: Path | None = None  # default: beside the database, <db>.hl7-journal.db
    hl7_default_charset: str = "UNICODE UTF-8"
    hl7_sender_charsets: dict[str, str] = Field(default_factory=dict)  # sending facility -> MSH-18 default
    hl7_timezone: str = "Asia/Shanghai"
    hl7_member_levels: dict[str, int] = Field(
        default_factory=dict
    )  # facility -> tier (village 1 .. county 3)
    hl7_outbound_retries: int = 5  # outbound ORU delivery attempts before giving up

    # DICOM
    dicom_host: str = "127.0.0.1"
    dicom_port: int = 11112  # 0 disables the listener
    dicom_aet: str = "YILIAN"
    dicom_storage: Path | None = None  # default: beside the database, <db dir>/dicom
    # calling AE title -> member code (the same facility code the member's HIS sends in MSH-4)
    dicom_known_aes: dict[str, str] = Field(default_factory=dict)
    dicom_move_destinations: dict[str, str] = Field(default_factory=dict)  # AE title -> "host:port"
    dicom_refuse_unknown_callers: bool = False
    dicom_duplicate_policy: str = "keep"  # keep | replace
    dicom_stable_seconds: float = 2.0
    dicom_workers: int = 2  # storage-only associations go to this many worker processes; 0 = in-process
    dicom_fsync: bool = True  # fsync each instance before success; False only to measure its cost

    def resolved_journal_path(self) -> Path:
        return self.hl7_journal or self.db.with_name(self.db.name + ".hl7-journal.db")

    def resolved_dicom_storage(self) -> Path:
        return self.dicom_storage or self.db.parent / "dicom"
