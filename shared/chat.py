"""The Chat Completion Job: one synchronous chat completion, its outputs, and its run resource."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the orchestrator imports this module: keep requests and azure.core out of its first episode
    from shared.azure_openai import AzureOpenAIClient


@dataclass
class ChatRun:
    run_id: str
    resource: str
    external_id: str
    deployment: str
    user_prompt: str
    requested_at: str
    monitor_url: str
    system_prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatRun:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def request_body(self) -> dict[str, Any]:
        """The chat request: `max_tokens` and `temperature` only when set."""
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": self.user_prompt})
        body: dict[str, Any] = {"messages": messages}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def resource_view(
        self,
        status: str,
        *,
        outputs: dict[str, Any] | None = None,
        failure: dict[str, Any] | None = None,
        started_at: str | None = None,
        ended_at: str | None = None,
    ) -> dict[str, Any]:
        ended = status in ("Success", "Failed")
        return {
            "id": self.run_id,
            "runId": f"{self.deployment}#sync#{status}" if ended else None,
            "jobId": self.external_id,
            "jobType": "chat_completion",
            "resource": self.resource,
            "status": status,
            "azureStatus": None,
            "requestedAt": self.requested_at,
            "startedAt": started_at,
            "endedAt": ended_at,
            "outputs": outputs
            or {
                "response": None,
                "prompt_tokens": None,
                "completion_tokens": None,
                "total_tokens": None,
                "finish_reason": None,
            },
            "failure": failure,
            "monitorUrl": self.monitor_url,
            "progress": None,
        }


def complete(run: ChatRun, client: AzureOpenAIClient) -> dict[str, Any]:
    """The job's outputs. Errors after which Azure did not process the request (429, 503, or no token to send it
    with) are raised so the orchestration retries them; any other (a refusal, a 500, a lost reply) is returned as
    `{"error": ...}`, since retrying a completion that may have run would pay for it twice."""
    from shared.azure_openai import AzureOpenAIError

    try:
        reply = client.chat_completion(run.deployment, run.request_body())
    except AzureOpenAIError as error:
        if error.status in (429, 503) or error.code == "CredentialUnavailable":
            raise
        return {"error": {"code": error.code, "message": error.message, "status": error.status}}
    choice = (reply.get("choices") or [{}])[0]
    usage = reply.get("usage") or {}
    return {
        "response": (choice.get("message") or {}).get("content"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "finish_reason": choice.get("finish_reason"),
    }
