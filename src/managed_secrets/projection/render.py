"""Render the native Secret a ManagedSecret projects: pure, no Kubernetes calls.

Keys are copied from the ACSCurrent value; ``target.template.data`` adds keys (or, with ``mergePolicy:
Replace``, replaces them all) rendered with Jinja2's sandbox, which refuses attribute tricks that reach
Python internals. Template errors are reported by key name and error kind only: the message of an arbitrary
exception could quote a value.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.nodes
from jinja2 import meta
from jinja2.compiler import CodeGenerator, CompilerExit, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from managed_secrets.crypto import fingerprint
from managed_secrets.domain import SecretValue
from managed_secrets.errors import ManagedSecretsError
from managed_secrets.names import (
    DATA_HASH_ANNOTATION,
    MANAGED_LABEL,
    OWNER_ANNOTATION,
    PREVIOUS_VERSION_ANNOTATION,
    VERSION_ANNOTATION,
)

__all__ = [
    "BINARY_VALUE_KEY",
    "DATA_HASH_ANNOTATION",
    "MANAGED_LABEL",
    "OWNER_ANNOTATION",
    "PREVIOUS_VERSION_ANNOTATION",
    "VERSION_ANNOTATION",
    "DesiredSecret",
    "RenderError",
    "TargetSpec",
    "data_hash",
    "render",
]

BINARY_VALUE_KEY = "value"

MAX_RENDERED_BYTES = 256 * 1024
"""The most one template may produce (a Secret holds at most 1 MiB in all)."""


MAX_RENDER_SECONDS = 1.0
"""The longest one template may render; a never-ending loop is stopped, not waited for."""
MAX_RENDER_STEPS = 1_000_000
"""The most blocks (loop iterations, branches, macro calls) one render may run."""


class _TickingCodeGenerator(CodeGenerator):
    """Starts every block of generated code (each loop iteration, branch and macro body) with a call to
    ``environment.render_tick()``, which is where a render is stopped when it has run too long."""

    def blockvisit(self, nodes: Iterable[jinja2.nodes.Node], frame: Frame) -> None:
        try:
            self.writeline("environment.render_tick()")
            for node in nodes:
                self.visit(node, frame)
        except CompilerExit:
            pass


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on the operators that can make huge objects from a short template
    (``'x' * 10**9``, ``2 ** 10**9``) and on the time and steps of a render: a template can cost the operator
    neither its memory nor its CPU."""

    intercepted_binops = frozenset({"*", "**"})
    code_generator_class = _TickingCodeGenerator
    _budget = threading.local()

    @contextlib.contextmanager
    def bounded(self) -> Iterator[None]:
        self._budget.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self._budget.steps = 0
        try:
            yield
        finally:
            self._budget.deadline = None

    def render_tick(self) -> None:
        budget = self._budget
        deadline = getattr(budget, "deadline", None)
        if deadline is None:
            return
        budget.steps += 1
        if budget.steps > MAX_RENDER_STEPS or (budget.steps % 1024 == 0 and time.monotonic() > deadline):
            raise SecurityError("render ran too long")

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > 64:
                raise SecurityError("exponent too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int)
                if sized and len(seq) * count > MAX_RENDERED_BYTES:
                    raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


_ENV = _BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False)


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> jinja2.Template:
    """Templates come from specs and repeat on every reconcile: compile each text once."""
    return _ENV.from_string(source)


class RenderError(ManagedSecretsError):
    """The projected Secret cannot be rendered (a template fails, or a value is not text)."""


@dataclass(frozen=True)
class TargetSpec:
    """``spec.target`` of a ManagedSecret, with the CRD's defaults applied."""

    name: str
    type: str = "Opaque"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    template: Mapping[str, str] = field(default_factory=dict)
    merge_policy: str = "Merge"
    include_previous: bool = False
    previous_suffix: str = "_PREVIOUS"
    creation_policy: str = "Owner"
    adopt_existing: bool = False
    drift_policy: str = "Revert"

    @classmethod
    def from_spec(cls, spec: Mapping[str, object], default_name: str) -> TargetSpec:
        target = spec.get("target") or {}
        assert isinstance(target, Mapping)
        template = target.get("template") or {}
        assert isinstance(template, Mapping)
        return cls(
            name=str(target.get("name") or default_name),
            type=str(target.get("type") or "Opaque"),
            labels=dict(target.get("labels") or {}),
            annotations=dict(target.get("annotations") or {}),
            template=dict(template.get("data") or {}),
            merge_policy=str(template.get("mergePolicy") or "Merge"),
            include_previous=bool(target.get("includePrevious", False)),
            previous_suffix=str(target.get("previousSuffix") or "_PREVIOUS"),
            creation_policy=str(target.get("creationPolicy") or "Owner"),
            adopt_existing=bool(target.get("adoptExisting", False)),
            drift_policy=str(target.get("driftPolicy") or "Revert"),
        )


@dataclass(frozen=True)
class DesiredSecret:
    """What the projected Secret must look like. ``repr`` shows key names, never data."""

    namespace: str
    name: str
    type: str
    data: Mapping[str, bytes]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @property
    def data_hash(self) -> str:
        return self.annotations[DATA_HASH_ANNOTATION]

    def __repr__(self) -> str:
        return (
            f"DesiredSecret({self.namespace}/{self.name}, type={self.type}, keys={sorted(self.data)}, "
            f"version={self.annotations.get(VERSION_ANNOTATION)})"
        )


def data_hash(data: Mapping[str, bytes], hash_key: bytes) -> str:
    """Keyed hash of a Secret's data: compares live and desired data without revealing either."""
    if not data:
        return fingerprint(b"{}", hash_key)
    return fingerprint(SecretValue.from_map(data).to_bytes(), hash_key)


def _plain(value: SecretValue) -> dict[str, bytes]:
    if value.keys():
        return value.as_dict()
    return {BINARY_VALUE_KEY: value.blob}


def _text_context(value: SecretValue) -> dict[str, str]:
    context: dict[str, str] = {}
    for key, raw in _plain(value).items():
        try:
            context[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary entries cannot take part in templates; referencing one is an undefined name
    return context


def _undefined(source: str, context: Mapping[str, object]) -> str:
    try:
        names = sorted(meta.find_undeclared_variables(_ENV.parse(source)) - set(context))
    except jinja2.TemplateError:
        names = []
    if names:
        return f"refers to undefined names {names} (the value has the keys named in spec.generate/valueFrom)"
    return "looks up an attribute or item that does not exist"


def _render_template(key: str, source: str, context: Mapping[str, object]) -> bytes:
    try:
        with _ENV.bounded():
            rendered = _compile(source).render(context).encode("utf-8")
        if len(rendered) > MAX_RENDERED_BYTES:
            raise RenderError(f"template for key {key!r} produced more than {MAX_RENDERED_BYTES} bytes")
        return rendered
    except jinja2.TemplateSyntaxError as e:
        raise RenderError(f"template for key {key!r} has a syntax error on line {e.lineno}: {e.message}") from None
    except jinja2.UndefinedError:
        # Jinja's own message quotes the object it looked into (a value): name only what is missing by name.
        raise RenderError(f"template for key {key!r} {_undefined(source, context)}") from None
    except RenderError:
        raise
    except SecurityError as e:
        if str(e) == "render ran too long":
            raise RenderError(
                f"template for key {key!r} ran longer than {MAX_RENDER_SECONDS:g}s or {MAX_RENDER_STEPS} steps"
            ) from None
        raise RenderError(f"template for key {key!r} tried an operation the sandbox forbids") from None
    except Exception as e:
        raise RenderError(f"template for key {key!r} failed ({type(e).__name__})") from None


def render(
    *,
    owner_namespace: str,
    owner_name: str,
    target: TargetSpec,
    current: SecretValue,
    current_version: str,
    hash_key: bytes,
    previous: SecretValue | None = None,
    previous_version: str | None = None,
) -> DesiredSecret:
    """The Secret for ``current`` (and ``previous`` when ``target.include_previous``)."""
    data = _plain(current)
    context: dict[str, object] = dict(_text_context(current))
    context["version"] = current_version
    if target.include_previous and previous is not None:
        for key, raw in _plain(previous).items():
            data[key + target.previous_suffix] = raw
        context["previous"] = _text_context(previous)
    rendered = {key: _render_template(key, source, context) for key, source in sorted(target.template.items())}
    if target.merge_policy == "Replace" and rendered:
        data = rendered
    else:
        data.update(rendered)

    annotations = dict(target.annotations)
    annotations[VERSION_ANNOTATION] = current_version
    if target.include_previous and previous_version:
        annotations[PREVIOUS_VERSION_ANNOTATION] = previous_version
    annotations[OWNER_ANNOTATION] = f"{owner_namespace}/{owner_name}"
    annotations[DATA_HASH_ANNOTATION] = data_hash(data, hash_key)
    labels = {**target.labels, MANAGED_LABEL: "true", "app.kubernetes.io/managed-by": "managed-secrets-operator"}
    return DesiredSecret(
        namespace=owner_namespace,
        name=target.name,
        type=target.type,
        data=data,
        labels=labels,
        annotations=annotations,
    )
