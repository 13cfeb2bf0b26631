"""What routes work with, as typed FastAPI dependencies declared once.

An app holds one ``Runtime`` (``app.state.runtime``, read here and nowhere else); its
lifespan fills it from the composition root (``services.py``) and empties it on the way
out. Routes name what they need (``PipelineDep``, ``RegistryDep``, …) and never touch
``app.state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from evothesis.api.transport.deadlines import ReadDeadlines
from evothesis.api.transport.request_metrics import RequestMetrics
from evothesis.billing.service import Billing
from evothesis.clock import Clock
from evothesis.config import Settings
from evothesis.export.notices import NoticeSender
from evothesis.export.pipeline import ExportPipeline
from evothesis.export.replays import Replays
from evothesis.gdpr.requests import DataSubjectRequests
from evothesis.registry.store import RegistryStore
from evothesis.services import Ingestion, Services

__all__ = [
    "BillingDep",
    "ClockDep",
    "IngestionDep",
    "NoticesDep",
    "PipelineDep",
    "RegistryDep",
    "ReplaysDep",
    "Runtime",
    "RuntimeDep",
    "ServicesDep",
    "SettingsDep",
    "SubjectsDep",
    "runtime_of",
]


@dataclass
class Runtime:
    """What one app serves with. ``settings``, ``clock`` and the request counter exist from
    the start; the rest while the lifespan runs (``start``/``stop``)."""

    settings: Settings
    clock: Clock
    http_metrics: RequestMetrics = field(default_factory=RequestMetrics)
    _services: Services | None = None
    _ingestion: Ingestion | None = None
    deadlines: ReadDeadlines | None = None

    def start(
        self,
        services: Services,
        *,
        ingestion: Ingestion | None = None,
        deadlines: ReadDeadlines | None = None,
    ) -> None:
        self._services = services
        self._ingestion = ingestion
        self.deadlines = deadlines

    def stop(self) -> None:
        self._services = self._ingestion = self.deadlines = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("the app is not running (its lifespan has not started)")
        return self._services

    @property
    def ingestion(self) -> Ingestion:
        """The collector's part; only collector apps have it."""
        if self._ingestion is None:
            raise RuntimeError("this app collects no events")
        return self._ingestion

    @property
    def has_ingestion(self) -> bool:
        return self._ingestion is not None

    def attach(self, app: FastAPI) -> None:
        app.state.runtime = self


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


def _settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def _clock(runtime: RuntimeDep) -> Clock:
    return runtime.clock


def _services(runtime: RuntimeDep) -> Services:
    return runtime.services


def _ingestion(runtime: RuntimeDep) -> Ingestion:
    return runtime.ingestion


def _pipeline(services: ServicesDep) -> ExportPipeline:
    return services.pipeline


def _replays(services: ServicesDep) -> Replays:
    return services.replays


def _notices(services: ServicesDep) -> NoticeSender:
    return services.notices


def _subjects(services: ServicesDep) -> DataSubjectRequests:
    return services.subjects


def _billing(services: ServicesDep) -> Billing:
    return services.billing


def _registry(services: ServicesDep) -> RegistryStore:
    if services.registry is None:
        raise RuntimeError("pixel-management routes are mounted only where the registry is")
    return services.registry


SettingsDep = Annotated[Settings, Depends(_settings)]
ClockDep = Annotated[Clock, Depends(_clock)]
ServicesDep = Annotated[Services, Depends(_services)]
IngestionDep = Annotated[Ingestion, Depends(_ingestion)]
PipelineDep = Annotated[ExportPipeline, Depends(_pipeline)]
SubjectsDep = Annotated[DataSubjectRequests, Depends(_subjects)]
ReplaysDep = Annotated[Replays, Depends(_replays)]
NoticesDep = Annotated[NoticeSender, Depends(_notices)]
BillingDep = Annotated[Billing, Depends(_billing)]
RegistryDep = Annotated[RegistryStore, Depends(_registry)]
