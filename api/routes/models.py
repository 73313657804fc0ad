"""The models this service can run: the embedded model and every folder under ``SJC_MODEL_DIRS``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import CurrentOwner, SettingsDep
from api.problems import problem_responses
from sjc_engine.catalog import list_models

router = APIRouter(prefix="/models", tags=["models"])


class ModelOut(BaseModel):
    """A model: ``vocabulary`` (when not ``null``) lists the only words its prompts may use."""

    name: str
    kind: Literal["latent", "pixel"]
    description: str
    default: bool
    vocabulary: dict[str, list[str]] | None = None
    defaults: dict[str, Any] = {}


class ModelList(BaseModel):
    items: list[ModelOut]


@router.get("", response_model=ModelList, responses=problem_responses(401))
def get_models(settings: SettingsDep, owner: CurrentOwner) -> ModelList:
    """Models by name (pass ``name`` as a job's ``model``), with the settings each recommends."""
    items = [
        ModelOut(name=m.name, kind=m.kind, description=m.description, default=m.name == settings.default_model,
                 vocabulary=m.vocabulary, defaults=m.defaults)
        for m in list_models(settings.model_dirs)
    ]
    return ModelList(items=items)
