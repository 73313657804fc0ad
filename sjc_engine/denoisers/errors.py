"""The error a model that exists but cannot be loaded raises; imports no torch, so the service can catch it.

A missing model (no such name or path) is :class:`sjc_engine.catalog.ModelNotFoundError`. A model that is
there but broken (a truncated or corrupted weights file, a missing component file, a file in the wrong format)
is a :class:`ModelLoadError`: one line that names the file, and a shorter :attr:`ModelLoadError.public_message`
without server paths for clients of the service.
"""

from __future__ import annotations

from pathlib import Path

DETAIL_CHARS = 300


def one_line(text: str, limit: int = DETAIL_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class ModelLoadError(RuntimeError):
    """A model was found but one of its files could not be loaded.

    Args:
        file: the file (or component folder) that failed.
        reason: what is wrong with it, one line, no paths (it goes into :attr:`public_message`).
        root: the model's folder; :attr:`public_message` names ``file`` relative to it (default: the file's name).
        model: the name the model was asked for by, for :attr:`public_message` (default: none).
        detail: the underlying library's error, kept in the full message only (it may hold server paths).

    Attributes:
        message: the full one-line message for logs and the command line (names the file's full path).
        public_message: the one-line message for clients: the model's name (a path's last part only), the
            file relative to the model folder and the reason; no server paths, no library error text.
    """

    def __init__(
        self,
        file: str | Path,
        reason: str,
        *,
        root: str | Path | None = None,
        model: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.file = Path(file)
        self.reason = one_line(reason)
        self.root = Path(root) if root is not None else None
        self.model = model
        self.detail = one_line(detail) if detail else None
        super().__init__(self.message)

    @property
    def relative_file(self) -> str:
        """``file`` relative to the model folder (its bare name when outside it or no folder is known)."""
        if self.root is not None:
            try:
                rel = self.file.relative_to(self.root).as_posix()
                return rel if rel != "." else self.file.name
            except ValueError:
                pass
        return self.file.name

    @property
    def message(self) -> str:
        text = f"cannot load model file {self.file}: {self.reason}"
        return f"{text} ({self.detail})" if self.detail else text

    @property
    def public_message(self) -> str:
        name = Path(self.model).name if self.model and ("/" in self.model or "\\" in self.model) else self.model
        who = f"model {name!r}" if name else "the model"
        return f"{who} could not be loaded: {self.relative_file}: {self.reason}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:
        """Pickles with all its fields (process pools and task queues pickle exceptions)."""
        return (_rebuild, (str(self.file), self.reason, str(self.root) if self.root else None, self.model, self.detail))


def _rebuild(file: str, reason: str, root: str | None, model: str | None, detail: str | None) -> ModelLoadError:
    return ModelLoadError(file, reason, root=root, model=model, detail=detail)
