"""Entra-like access tokens: issued by the managed-identity emulator, checked by the other emulators.

Tokens are JWTs (PyJWT) with the claims Entra puts in app-only tokens. Expiry is real wall time, not the virtual
clock: credentials cache tokens by real time, and the virtual clock only drives batch lifecycles and timers.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

TOKEN_LIFETIME_SECONDS = 24 * 3600  # managed-identity tokens live about a day

# Audiences each emulated service accepts (Entra writes ARM's with a trailing slash when asked for it).
ARM_AUDIENCES = frozenset(
    {
        "https://management.core.windows.net/",
        "https://management.core.windows.net",
        "https://management.azure.com/",
        "https://management.azure.com",
    }
)
COGNITIVE_AUDIENCES = frozenset({"https://cognitiveservices.azure.com", "https://cognitiveservices.azure.com/"})
VAULT_AUDIENCES = frozenset({"https://vault.azure.net", "https://vault.azure.net/"})


class InvalidToken(Exception):
    """Why a bearer token is refused: `reason` is 'malformed', 'expired' or 'audience'; `audience` is the token's
    audience (for 'audience') and `expires` its expiry in Unix seconds (for 'expired')."""

    def __init__(self, reason: str, audience: str | None = None, expires: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.audience = audience
        self.expires = expires


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_on: int
    resource: str
    client_id: str


class TokenIssuer:
    """Signs and verifies the emulator's access tokens; the signing key lives only in this process."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self._key = secrets.token_bytes(32)
        self.principal_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"devstack-identity/{tenant_id}"))
        self.client_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"devstack-client/{tenant_id}"))

    def issue(self, resource: str, client_id: str | None = None, principal_id: str | None = None) -> IssuedToken:
        """A token for `resource`; as the app's identity unless `principal_id` (and `client_id`) name another one,
        such as an Azure OpenAI resource's system-assigned identity."""
        now = int(time.time())
        principal = principal_id or self.principal_id
        expires_on = now + TOKEN_LIFETIME_SECONDS
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now - 300,
            "exp": expires_on,
            "appid": client_id or self.client_id,
            "appidacr": "2",
            "idtyp": "app",
            "oid": principal,
            "sub": principal,
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        token = jwt.encode(claims, self._key, algorithm="HS256", headers={"kid": "devstack"})
        return IssuedToken(token, expires_on, resource, client_id or self.client_id)

    def verify(self, token: str, audiences: frozenset[str]) -> dict[str, Any]:
        """The token's claims, or InvalidToken saying why it cannot be accepted for these audiences."""
        if not token.isascii():  # a JWT is base64url and dots; HTTP headers can still carry any bytes
            raise InvalidToken("malformed")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"verify_aud": False}, leeway=60
            )
        except jwt.ExpiredSignatureError as exc:
            expired = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"verify_aud": False, "verify_exp": False}
            )
            raise InvalidToken("expired", expires=int(expired["exp"])) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed") from exc
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience not in audiences:
            raise InvalidToken("audience", str(audience))
        return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, if that is what the header holds."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
