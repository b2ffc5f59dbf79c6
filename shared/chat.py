"""The Chat Completion Job: one synchronous chat completion, its outputs, and its run resource."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from shared.runs import Failure, RunStatus

if TYPE_CHECKING:  # the orchestrator imports this module: keep requests and azure.core out of its first episode
    from shared.azure_openai import AzureOpenAIClient


UNANSWERED = Failure.of(
    "chat_failed", "Azure OpenAI stayed busy or unreachable after several tries; the completion did not run."
)


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
        status: RunStatus,
        *,
        outputs: dict[str, Any] | None = None,
        failure: Failure | None = None,
        started_at: str | None = None,
        ended_at: str | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "runId": f"{self.deployment}#sync#{status.value}" if status.is_terminal else None,
            "jobId": self.external_id,
            "jobType": "chat_completion",
            "resource": self.resource,
            "status": status.value,
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
            "failure": failure.to_dict() if failure else None,
            "monitorUrl": self.monitor_url,
            "progress": None,
        }


def custom_status_of(view: dict[str, Any]) -> dict[str, Any]:
    """The run resource as custom status: without the response, which may be far longer than Durable's 16 KB of
    custom status (the API reads the whole resource from the orchestration's output once the run ended)."""
    outputs = view.get("outputs") or {}
    return view | {"outputs": outputs | {"response": None}} if outputs.get("response") else view


def complete(run: ChatRun, client: AzureOpenAIClient) -> dict[str, Any]:
    """The job's outputs, or `{"failure": ...}` when Azure refused or failed the request. Errors after which Azure
    did not process the request (429, 503, or no token to send it with) are raised so the orchestration retries
    them; any other (a refusal, a 500, a lost reply) is an answer, since retrying a completion that may have run
    would pay for it twice."""
    from shared.http import AzureError

    try:
        reply = client.chat_completion(run.deployment, run.request_body())
    except AzureError as error:
        if error.status in (429, 503) or error.code == "CredentialUnavailable":
            raise
        return {"failure": Failure.of(error.code, error.message or f"Azure OpenAI answered {error.status}.").to_dict()}
    return {
        "response": reply.content,
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.total_tokens,
        "finish_reason": reply.finish_reason,
    }
